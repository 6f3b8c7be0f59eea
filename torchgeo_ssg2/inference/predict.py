"""Predict a whole raster: the Python function and the ``torchgeo-ssg2 predict`` command."""

import argparse
import os
import queue
import signal
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .datamodule import build_window_dataset
from .dataset import SupportMode, collate_windows
from .model import check_device, load_task, needs_supports, predict_batch, task_classes
from .output import RasterMeta, check_output_free, gdal_cache_limit, output_paths
from .writer import PredictionAssembler

__all__ = ('add_subcommand', 'predict_raster')


def _prefetch[T](items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate in a background thread so reads overlap with compute.

    Args:
        items: The iterable (e.g. a DataLoader reading windows).
        depth: Items read ahead.

    Yields:
        The items, in order; an exception raised while reading is re-raised here.
    """
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(('item', item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(('end', None))
        except BaseException as err:
            q.put(('error', err))

    thread = threading.Thread(target=work, name='raster-reader', daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == 'end':
                return
            if kind == 'error':
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move a batch's tensors to a device.

    Args:
        batch: The batch.
        device: Target device.

    Returns:
        The batch on the device.
    """
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v
        for k, v in batch.items()
    }


def _model_device(model: nn.Module) -> torch.device:
    """Device of a module's first parameter (CPU for parameter-free modules).

    Args:
        model: The module.

    Returns:
        Its device.
    """
    for p in model.parameters():
        return p.device
    return torch.device('cpu')


def predict_raster(
    checkpoint_or_task: str | os.PathLike[str] | nn.Module,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    window: int = 256,
    overlap: int = 64,
    batch_size: int = 4,
    overwrite: bool = False,
    probabilities: bool = False,
    uncertainty: bool = False,
    supports: SupportMode = 'raster',
    support_bank: Any = None,
    sequence_length: int | None = None,
    mean: float | Sequence[float] | Tensor | None = None,
    std: float | Sequence[float] | Tensor | None = None,
    support_seed: int = 0,
    blend_floor: float = 0.01,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Predict a raster of any size with overlapping windows and write a GeoTIFF.

    Windows of ``window`` pixels advancing by ``window - overlap`` are read with
    rasterio, normalised as the training datamodule did, batched through the
    task's ``predict_step``, blended with a smooth (Hann) weight and written in
    blocks, so memory does not grow with the raster. The output has the input's
    CRS, transform, width and height (see :mod:`torchgeo_ssg2.inference.output`
    for its bands and sidecars); input nodata becomes output nodata.

    Everything that can fail (unavailable device, output that would replace an
    input, unreadable or truncated input, band count, unsafe or wrong checkpoint,
    missing normalisation statistics, existing output) is checked before any
    window is predicted, and no file is left at the output paths on error (see
    :mod:`torchgeo_ssg2.inference.output` for the staging files).

    Args:
        checkpoint_or_task: An SSG2Task/PTAViTTask checkpoint file (checkpoints
            of other models are refused), or a model object: a task (any
            LightningModule whose ``predict_step`` returns torchgeo's dict, such
            as SSG2Task and PTAViTTask) or a plain module mapping BxCxHxW images
            to BxKxHxW probabilities.
        input: Input raster (any GDAL format; without CRS the prediction is made
            in pixel space with a warning).
        output: Class-index GeoTIFF to write.
        window: Window side in pixels (a multiple of 32 for SSG2/PTAViT).
        overlap: Pixels shared by neighbouring windows.
        batch_size: Windows per forward pass.
        overwrite: Whether existing outputs may be replaced.
        probabilities: Also write ``OUT_probabilities.tif`` (float32, K bands).
        uncertainty: Also write ``OUT_uncertainty.tif`` (float32; SSG2 only).
        supports: SSG2 supports from the input itself (``"raster"``) or from
            ``support_bank`` (``"bank"``); ignored for single-image models.
        support_bank: A :class:`torchgeo_ssg2.samplers.SupportBank`.
        sequence_length: Supports per window (default: the task's).
        mean: Per-band mean in the input's units (default: the statistics
            recorded in the checkpoint, or the task's ``normalization``; without
            either, ``mean`` and ``std`` must be given).
        std: Per-band std (default: as ``mean``).
        support_seed: Seed of the raster support selector.
        blend_floor: Smallest blending weight at a window's edge.
        device: Device to run on (default: where the model is; checkpoints load on
            the CPU).
        progress: Show a progress bar.

    Returns:
        The written files by role (``"classes"``, ``"probabilities"``,
        ``"uncertainty"``).

    Raises:
        ValueError: If the device, checkpoint, input or arguments are unusable,
            or an output would replace an input.
        FileExistsError: If an output exists and ``overwrite`` is False.
        OSError: If a window of the input cannot be read.
    """
    requested_device = check_device(device) if device is not None else None
    paths = output_paths(output, probabilities, uncertainty)
    protected = {'input raster': Path(input)}
    if not isinstance(checkpoint_or_task, nn.Module):
        protected['checkpoint'] = Path(checkpoint_or_task)
    if hasattr(support_bank, 'source_files'):
        for i, path in enumerate(support_bank.source_files()):
            protected[f'support-bank image #{i}'] = path
    check_output_free(paths, overwrite, protected)
    RasterMeta.from_file(input)  # unreadable, truncated or missing input fails first
    checkpoint: dict[str, Any] | None = None
    if isinstance(checkpoint_or_task, nn.Module):
        model = checkpoint_or_task
    else:
        model, checkpoint = load_task(checkpoint_or_task)
    if uncertainty and not needs_supports(model) and isinstance(model, task_classes()):
        msg = f'{type(model).__name__} gives no uncertainty (only SSG2Task does)'
        raise ValueError(msg)
    run_device = requested_device or _model_device(model)
    was_training = model.training
    model_device = _model_device(model)
    dataset = build_window_dataset(
        model,
        input,
        checkpoint=checkpoint,
        window=window,
        overlap=overlap,
        mean=mean,
        std=std,
        supports=supports,
        support_bank=support_bank,
        sequence_length=sequence_length,
        support_seed=support_seed,
    )
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_windows
    )
    model.to(run_device)
    model.eval()
    assembler = PredictionAssembler(
        dataset.meta,
        dataset.grid,
        output,
        probabilities=probabilities,
        uncertainty=uncertainty,
        overwrite=overwrite,
        blend_floor=blend_floor,
        protected=protected,
    )
    reader = _prefetch(loader)
    try:
        with gdal_cache_limit(), torch.inference_mode():
            batches = tqdm(
                reader,
                total=len(loader),
                desc=f'predict {Path(input).name}',
                unit='batch',
                disable=not progress,
            )
            for batch_idx, batch in enumerate(batches):
                batch = _to_device(batch, run_device)
                prediction = predict_batch(model, batch, batch_idx)
                assembler.add_batch(prediction, batch)
            return assembler.finish()
    except BaseException:
        assembler.abort()
        raise
    finally:
        reader.close()  # stops and joins the reader thread before the file closes
        dataset.close()
        model.to(model_device)
        model.train(was_training)


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM.

    A ``BaseException`` like ``KeyboardInterrupt``, so that clean-up code that
    catches ``BaseException`` runs and ordinary ``except Exception`` does not
    swallow it.

    Args:
        signum: The signal number.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while predicting (main thread only).

    Yields:
        Nothing; the previous handler is restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_command(args: argparse.Namespace) -> int:
    """Run ``torchgeo-ssg2 predict``.

    User errors (bad paths, inputs, checkpoints, arguments, devices) print one
    line and return 1; SIGTERM and Ctrl-C abort cleanly (no output or staging
    file is left) and return 143 and 130.

    Args:
        args: Parsed arguments.

    Returns:
        The exit status.
    """
    prefix = 'torchgeo-ssg2 predict: error:'
    try:
        with _sigterm_raises():
            written = _predict_from_args(args)
    except (ValueError, KeyError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f'{prefix} {message}', file=sys.stderr)
        return 1
    except Terminated as err:
        print(f'{prefix} stopped by {err}; no output written', file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print(f'{prefix} interrupted; no output written', file=sys.stderr)
        return 130
    for role, path in written.items():
        print(f'{role}: {path}')
    return 0


def _predict_from_args(args: argparse.Namespace) -> dict[str, Path]:
    """Call :func:`predict_raster` with the command's arguments.

    Args:
        args: Parsed arguments.

    Returns:
        The written files.
    """
    return predict_raster(
        args.checkpoint,
        args.input,
        args.output,
        window=args.window,
        overlap=args.overlap,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        probabilities=args.probabilities,
        uncertainty=args.uncertainty,
        supports=args.supports,
        sequence_length=args.sequence_length,
        mean=args.mean,
        std=args.std,
        support_seed=args.support_seed,
        device=args.device,
        progress=not args.no_progress,
    )


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``predict`` on the ``torchgeo-ssg2`` command line.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers``.

    Returns:
        The sub-command's parser.
    """
    parser = subparsers.add_parser(
        'predict',
        help='predict a large raster with a trained SSG2/PTAViT checkpoint',
        description=(
            'Predict a GeoTIFF (of any size) with overlapping sliding windows and '
            'write a tiled, compressed, georeferenced class-index GeoTIFF '
            '(OUT_probabilities.tif / OUT_uncertainty.tif on request).'
        ),
    )
    parser.add_argument('--checkpoint', required=True, help='SSG2Task/PTAViTTask .ckpt')
    parser.add_argument('--input', required=True, help='input raster')
    parser.add_argument('--output', required=True, help='output GeoTIFF')
    parser.add_argument('--window', type=int, default=256, help='window side (px)')
    parser.add_argument('--overlap', type=int, default=64, help='window overlap (px)')
    parser.add_argument('--batch-size', type=int, default=4, help='windows per batch')
    parser.add_argument(
        '--overwrite', action='store_true', help='replace existing outputs'
    )
    parser.add_argument(
        '--probabilities', action='store_true', help='write OUT_probabilities.tif'
    )
    parser.add_argument(
        '--uncertainty', action='store_true', help='write OUT_uncertainty.tif (SSG2)'
    )
    parser.add_argument(
        '--supports',
        choices=('raster',),
        default='raster',
        help='where SSG2 supports come from (a bank needs the Python API or config)',
    )
    parser.add_argument('--sequence-length', type=int, default=None)
    parser.add_argument('--support-seed', type=int, default=0)
    parser.add_argument(
        '--mean',
        type=float,
        nargs='+',
        default=None,
        help='per-band mean in the units of the input (default: from the checkpoint)',
    )
    parser.add_argument(
        '--std',
        type=float,
        nargs='+',
        default=None,
        help='per-band std (default: from the checkpoint)',
    )
    parser.add_argument('--device', default=None, help='torch device (default: cpu)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.set_defaults(func=_run_command)
    return parser
