"""Predict rasters: the Python functions and the ``torchgeo-ssg2 predict`` command.

:func:`predict_raster` (one raster), :func:`predict_rasters` (many) and the
command run one loop: ``Trainer.predict`` with
:class:`~torchgeo_ssg2.inference.RasterPredictDataModule` and
:class:`~torchgeo_ssg2.inference.RasterPredictionWriter`, the same pair that
``torchgeo predict --config experiments/predict_ssg2.yaml`` uses.
"""

import argparse
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import Tensor, nn

from .datamodule import RasterPredictDataModule
from .dataset import SupportMode
from .inputs import expand_inputs, outputs_for
from .model import (
    check_device,
    load_task,
    model_in_channels,
    needs_supports,
    predict_batch,
)
from .output import check_output_free, output_paths
from .sharding import ShardMode
from .writer import RasterPredictionWriter

__all__ = (
    'ModulePredictor',
    'PredictOptions',
    'add_subcommand',
    'predict_raster',
    'predict_rasters',
)


class ModulePredictor(LightningModule):
    """A plain module as a LightningModule whose ``predict_step`` Lightning runs.

    Args:
        module: Maps BxCxHxW images (and TxCxHxW supports per image when it
            ``needs_supports``) to BxKxHxW probabilities or to torchgeo's dict.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.in_channels = model_in_channels(module)
        self.needs_supports = needs_supports(module)
        self.sequence_length = getattr(module, 'sequence_length', None)
        self.normalization = getattr(module, 'normalization', None)

    def predict_step(
        self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        """Predict one batch of windows.

        Args:
            batch: ``image`` BxCxHxW (and ``support_image`` BxTxCxHxW).
            batch_idx: Index of the batch.
            dataloader_idx: Index of the dataloader.

        Returns:
            ``{"probabilities": BxKxHxW, "uncertainty": BxHxW (optional)}``.
        """
        return predict_batch(self.module, batch, batch_idx)


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


def _check_counts(accelerator: str | None, devices: int, num_nodes: int) -> None:
    """Refuse device and node counts that no placement takes.

    Args:
        accelerator: The accelerator asked for, or None.
        devices: Devices (processes) per node.
        num_nodes: Nodes.

    Raises:
        ValueError: If a count is not positive, or above 1 without an accelerator.
    """
    if devices < 1 or num_nodes < 1:
        msg = f'devices and num_nodes must be >= 1, got {devices} and {num_nodes}'
        raise ValueError(msg)
    if accelerator is None and (devices > 1 or num_nodes > 1):
        msg = 'more than one device needs an accelerator (--accelerator cpu|gpu|auto)'
        raise ValueError(msg)


def _placement(
    model: nn.Module,
    device: str | torch.device | None,
    accelerator: str | None,
    devices: int,
    num_nodes: int,
) -> dict[str, Any]:
    """The Trainer's ``accelerator``, ``devices``, ``num_nodes`` and ``strategy``.

    Args:
        model: The model (its device is the default of a task object).
        device: A torch device name, ``"auto"`` (the accelerator if there is
            one) or None (where the model is; ``"auto"`` for checkpoints, which
            load on the CPU, is decided by the caller).
        accelerator: ``"auto"``, ``"cpu"``, ``"gpu"``, ...: with ``devices`` and
            ``num_nodes``, for one or many processes; overrides ``device``.
        devices: Devices (processes) per node.
        num_nodes: Nodes.

    Returns:
        Keyword arguments of :class:`~lightning.pytorch.Trainer`.

    Raises:
        ValueError: If the device is unavailable or the counts are not positive.
    """
    _check_counts(accelerator, devices, num_nodes)
    if accelerator is None:
        if device is None:
            dev = _model_device(model)
        elif str(device) == 'auto':
            return {'accelerator': 'auto', 'devices': 1, 'num_nodes': 1}
        else:
            dev = check_device(device)
        if dev.type == 'cpu':
            return {'accelerator': 'cpu', 'devices': 1, 'num_nodes': 1}
        kind = 'gpu' if dev.type == 'cuda' else dev.type
        return {'accelerator': kind, 'devices': [dev.index or 0], 'num_nodes': 1}
    placement: dict[str, Any] = {
        'accelerator': accelerator,
        'devices': devices,
        'num_nodes': num_nodes,
    }
    if devices * num_nodes > 1:
        placement['strategy'] = 'ddp'
    return placement


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's start-up messages and its data-loader hints."""
    loggers = [logging.getLogger(n) for n in ('lightning.pytorch', 'lightning.fabric')]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='.*LeafSpec.*is deprecated.*')
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@dataclass(frozen=True)
class PredictOptions:
    """How rasters are predicted, one set of options for every front door.

    :func:`predict_raster`, :func:`predict_rasters` and ``torchgeo-ssg2
    predict`` share them. Both functions take an instance (``options``) and/or the fields as keyword
    arguments, which override it: ``predict_raster(task, tif, out, window=128)``.

    Args:
        window: Window side in pixels (a multiple of 32 for SSG2/PTAViT).
        overlap: Pixels shared by neighbouring windows.
        batch_size: Windows per forward pass.
        num_workers: Worker processes reading windows (0: the main process).
        overwrite: Replace existing outputs (:func:`predict_raster`), or
            predict rasters whose outputs are complete again
            (:func:`predict_rasters`, which otherwise skips them).
        probabilities: Also write ``OUT_probabilities.tif`` (float32, K bands).
        uncertainty: Also write ``OUT_uncertainty.tif`` (float32; the normalised
            entropy the tasks give, or the module's ``uncertainty``).
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
        device: Device to run on: a torch device name, or ``"auto"`` (the
            accelerator if the machine has one). Default: where a model object
            is; ``"auto"`` for a checkpoint.
        cog: Write Cloud-Optimized GeoTIFFs with overviews.
        class_names: Class names for the band descriptions and metadata.
        palette: RGB colour of each class for the class map's colour table.
        progress: Show progress per raster and in total, with the remaining time.
    """

    window: int = 256
    overlap: int = 64
    batch_size: int = 4
    num_workers: int = 0
    overwrite: bool = False
    probabilities: bool = False
    uncertainty: bool = False
    supports: SupportMode = 'raster'
    support_bank: Any = None
    sequence_length: int | None = None
    mean: float | Sequence[float] | Tensor | None = None
    std: float | Sequence[float] | Tensor | None = None
    support_seed: int = 0
    blend_floor: float = 0.01
    device: str | torch.device | None = None
    cog: bool = False
    class_names: Sequence[str] | None = None
    palette: Sequence[Sequence[int]] | None = None
    progress: bool = True


def _options(
    options: PredictOptions | None, overrides: dict[str, Any]
) -> PredictOptions:
    """The options with keyword overrides applied.

    Args:
        options: Base options (default: :class:`PredictOptions`'s defaults).
        overrides: Fields of :class:`PredictOptions`.

    Returns:
        The options.

    Raises:
        TypeError: If an override is not a field of :class:`PredictOptions`.
    """
    base = PredictOptions() if options is None else options
    unknown = sorted(set(overrides) - {f.name for f in fields(PredictOptions)})
    if unknown:
        msg = f'unexpected prediction option(s): {", ".join(unknown)}'
        raise TypeError(msg)
    return replace(base, **overrides)


def _run(
    checkpoint_or_task: str | os.PathLike[str] | nn.Module,
    input: Any,
    options: PredictOptions,
    *,
    output: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    accelerator: str | None = None,
    devices: int = 1,
    num_nodes: int = 1,
    shard: ShardMode = 'auto',
    vrt: bool = False,
    keep_going: bool = False,
) -> RasterPredictionWriter:
    """The one prediction loop: ``Trainer.predict`` with the datamodule and writer.

    Cheap checks that need no model run first (the device, the outputs of a
    single input), then the checkpoint is loaded, then the datamodule and the
    writer check every input and output before the first window.

    Args:
        checkpoint_or_task: See :func:`predict_raster`.
        input: Input rasters (one path with ``output``).
        options: The prediction options.
        output: Output file of a single raster, or None.
        output_dir: Output folder, or None.
        accelerator: See :func:`predict_rasters`.
        devices: See :func:`predict_rasters`.
        num_nodes: See :func:`predict_rasters`.
        shard: See :func:`predict_rasters`.
        vrt: See :func:`predict_rasters`.
        keep_going: See :func:`predict_rasters`.

    Returns:
        The writer, holding what was written.
    """
    o = options
    device = o.device
    _check_counts(accelerator, devices, num_nodes)
    if device is not None and str(device) != 'auto' and accelerator is None:
        check_device(device)
    if output is not None:
        protected = {'input raster': Path(input)}
        if not isinstance(checkpoint_or_task, nn.Module):
            protected['checkpoint'] = Path(checkpoint_or_task)
        if hasattr(o.support_bank, 'source_files'):
            for i, path in enumerate(o.support_bank.source_files()):
                protected[f'support-bank image #{i}'] = path
        paths = output_paths(output, o.probabilities, o.uncertainty)
        check_output_free(paths, o.overwrite, protected)
    # a missing input, a single output for many or outputs that two inputs
    # share fail before the checkpoint is read
    outputs_for(
        expand_inputs(input),
        output,
        output_dir,
        probabilities=o.probabilities,
        uncertainty=o.uncertainty,
    )
    checkpoint: dict[str, Any] | None = None
    if isinstance(checkpoint_or_task, nn.Module):
        model = checkpoint_or_task
        if device is None and not isinstance(model, LightningModule):
            device = _model_device(model)
    else:
        model, checkpoint = load_task(checkpoint_or_task)
        device = 'auto' if device is None else device
    module = model if isinstance(model, LightningModule) else ModulePredictor(model)
    placement = _placement(model, device, accelerator, devices, num_nodes)
    datamodule = RasterPredictDataModule(
        input,
        window=o.window,
        overlap=o.overlap,
        batch_size=o.batch_size,
        num_workers=o.num_workers,
        mean=o.mean,
        std=o.std,
        supports=o.supports,
        support_bank=o.support_bank,
        sequence_length=o.sequence_length,
        support_seed=o.support_seed,
        keep_going=keep_going,
        shard=shard,
    )
    datamodule.checkpoint = checkpoint
    writer = RasterPredictionWriter(
        None if output is None else os.fspath(output),
        None if output_dir is None else os.fspath(output_dir),
        overwrite=o.overwrite,
        probabilities=o.probabilities,
        uncertainty=o.uncertainty,
        blend_floor=o.blend_floor,
        cog=o.cog,
        class_names=None if o.class_names is None else list(o.class_names),
        palette=None if o.palette is None else [list(c) for c in o.palette],
        vrt=vrt,
        progress=o.progress,
    )
    model_device = _model_device(model)
    with _quiet_lightning():
        try:
            trainer = Trainer(
                **placement,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                use_distributed_sampler=False,
                callbacks=[writer],
            )
        except (MisconfigurationException, RuntimeError) as err:
            where = ', '.join(f'{k}={v}' for k, v in placement.items())
            msg = f'cannot predict with {where}: {str(err).splitlines()[0]}'
            raise ValueError(msg) from None
        try:
            trainer.predict(module, datamodule=datamodule, return_predictions=False)
        except SystemExit:
            # Lightning turns Ctrl-C into sys.exit(1) after its clean-up (the
            # writer has removed its staging files): report it as an interrupt.
            if trainer.interrupted:
                raise KeyboardInterrupt from None
            raise
        finally:
            model.to(model_device)
    return writer


def predict_raster(
    checkpoint_or_task: str | os.PathLike[str] | nn.Module,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: PredictOptions | None = None,
    **overrides: Any,
) -> dict[str, Path]:
    """Predict a raster of any size with overlapping windows and write a GeoTIFF.

    Windows of ``window`` pixels advancing by ``window - overlap`` are read with
    rasterio, normalised as the training datamodule did, batched through the
    task's ``predict_step`` by ``Trainer.predict``, blended with a smooth (Hann)
    weight and written in blocks, so memory does not grow with the raster. The
    output has the input's CRS, transform, width and height (see
    :mod:`torchgeo_ssg2.inference.output` for its bands, colour table, class
    names and sidecars); input nodata becomes output nodata.

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
        options: The prediction options (default: :class:`PredictOptions`'s).
        **overrides: Fields of :class:`PredictOptions` (``window``,
            ``overlap``, ``batch_size``, ...), overriding ``options``.

    Returns:
        The written files by role (``"classes"``, ``"probabilities"``,
        ``"uncertainty"``).

    Raises:
        TypeError: If an override is not a prediction option.
        ValueError: If the device, checkpoint, input or arguments are unusable,
            or an output would replace an input.
        FileExistsError: If an output exists and ``overwrite`` is False.
        OSError: If a window of the input cannot be read.
    """
    opts = _options(options, overrides)
    writer = _run(checkpoint_or_task, input, opts, output=output)
    return writer.written


def predict_rasters(
    checkpoint_or_task: str | os.PathLike[str] | nn.Module,
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    options: PredictOptions | None = None,
    *,
    accelerator: str | None = None,
    devices: int = 1,
    num_nodes: int = 1,
    shard: ShardMode = 'auto',
    vrt: bool = False,
    keep_going: bool = False,
    **overrides: Any,
) -> dict[Path, dict[str, Path]]:
    """Predict many rasters into a folder, on one device or many (DDP).

    Each raster is predicted as by :func:`predict_raster`, keeps its own CRS and
    grid, and goes to ``output_dir/<stem>.tif``
    (:func:`~torchgeo_ssg2.inference.inputs.outputs_for`). Rasters whose outputs
    are complete are skipped unless ``overwrite`` (a rerun resumes). With
    ``devices``/``num_nodes`` above 1, Lightning's DDP runs one process per
    device; the rasters, or strips of the window rows of large ones, are shared
    out between them (``shard``, :mod:`~torchgeo_ssg2.inference.sharding`).
    Every output is written by one process, byte-identical to a single-process
    run. Call it from a script (DDP starts the script again for every other
    rank) or from ``torchgeo-ssg2 predict``.

    Args:
        checkpoint_or_task: As for :func:`predict_raster`.
        inputs: Rasters, folders, glob patterns or list files
            (:func:`~torchgeo_ssg2.inference.inputs.expand_inputs`).
        output_dir: Output folder (created if missing).
        options: The prediction options (default: :class:`PredictOptions`'s).
        accelerator: ``"auto"``, ``"cpu"`` or ``"gpu"`` for ``devices`` x
            ``num_nodes`` processes (overrides the ``device`` option).
        devices: Devices (processes) per node.
        num_nodes: Nodes (the output folder must be shared by all nodes).
        shard: ``"auto"`` (cut a raster into strips when it has more windows
            than a rank's fair share of all windows), ``"rasters"`` (whole
            rasters only) or ``"strips"`` (every raster into one strip per
            rank).
        vrt: Write VRT mosaics of the outputs (one per CRS), after every rank.
        keep_going: Report and leave out rasters that fail their checks instead
            of stopping before any work.
        **overrides: Fields of :class:`PredictOptions`, overriding ``options``.

    Returns:
        The files of every raster (written now or found complete) by input.

    Raises:
        TypeError: If an override is not a prediction option.
    """
    writer = _run(
        checkpoint_or_task,
        inputs,
        _options(options, overrides),
        output_dir=output_dir,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        shard=shard,
        vrt=vrt,
        keep_going=keep_going,
    )
    return writer.results


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
            written, skipped, mosaics = _predict_from_args(args)
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
    if int(os.environ.get('LOCAL_RANK', '0')) or int(os.environ.get('NODE_RANK', '0')):
        return 0  # rank 0 reports
    for path in skipped:
        print(f'skipped (outputs complete; --overwrite predicts again): {path}')
    for role, path in written.items():
        print(f'{role}: {path}')
    for path in mosaics:
        print(f'mosaic: {path}')
    return 0


def _bank_from_args(args: argparse.Namespace) -> Any:
    """The support bank of ``--supports bank --bank-images ...``.

    Args:
        args: Parsed arguments.

    Returns:
        A :class:`~torchgeo_ssg2.samplers.SupportBank` of window-sized chips of
        the images, or None for raster supports.

    Raises:
        ValueError: If the options do not fit together.
    """
    if args.supports != 'bank':
        if args.bank_images:
            msg = '--bank-images needs --supports bank'
            raise ValueError(msg)
        return None
    if not args.bank_images:
        msg = '--supports bank needs --bank-images (image files, folders or globs)'
        raise ValueError(msg)
    if args.sequence_length is None:
        msg = '--supports bank needs --sequence-length (supports per window)'
        raise ValueError(msg)
    from ..samplers.inference import ImageChips, SupportBank

    chips = ImageChips(expand_inputs(args.bank_images), args.window)
    return SupportBank(chips, args.sequence_length, seed=args.support_seed)


def _predict_from_args(
    args: argparse.Namespace,
) -> tuple[dict[str, Path], list[Path], list[Path]]:
    """Call :func:`predict_raster` or :func:`predict_rasters` with the arguments.

    Args:
        args: Parsed arguments.

    Returns:
        The written files (by role, or ``"classes <input>"`` with
        ``--output-dir``), the skipped inputs and the mosaics.
    """
    if args.output is not None:
        for flag in ('vrt', 'keep_going'):
            if getattr(args, flag):
                msg = f'--{flag.replace("_", "-")} needs --output-dir'
                raise ValueError(msg)
        if args.accelerator is not None or args.devices != 1 or args.num_nodes != 1:
            msg = '--accelerator/--devices/--num-nodes need --output-dir'
            raise ValueError(msg)
        if len(args.input) != 1:
            msg = (
                f'--output names one file but --input gives {len(args.input)} '
                'items: pass --output-dir'
            )
            raise ValueError(msg)
    palette = None
    if args.palette:
        palette = [_hex_colour(c) for c in args.palette]
    options = PredictOptions(
        window=args.window,
        overlap=args.overlap,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        overwrite=args.overwrite,
        probabilities=args.probabilities,
        uncertainty=args.uncertainty,
        supports=args.supports,
        support_bank=_bank_from_args(args),
        sequence_length=args.sequence_length,
        mean=args.mean,
        std=args.std,
        support_seed=args.support_seed,
        device=args.device,
        cog=args.cog,
        class_names=args.class_names,
        palette=palette,
        progress=not args.no_progress,
    )
    if args.output is not None:
        written = predict_raster(args.checkpoint, args.input[0], args.output, options)
        return written, [], []
    writer = _run(
        args.checkpoint,
        args.input,
        options,
        output_dir=args.output_dir,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        shard=args.shard,
        vrt=args.vrt,
        keep_going=args.keep_going,
    )
    skipped = set(writer.skipped)
    written = {
        f'{role} {source}': path
        for source, paths in writer.results.items()
        if source not in skipped
        for role, path in paths.items()
    }
    return written, list(writer.skipped), list(writer.mosaics)


def _hex_colour(text: str) -> tuple[int, int, int]:
    """Parse ``#rrggbb`` (or ``rrggbb``).

    Args:
        text: The colour.

    Returns:
        ``(r, g, b)``.

    Raises:
        ValueError: If it is not six hex digits.
    """
    digits = text.removeprefix('#')
    if len(digits) != 6:
        msg = f'--palette colours are #rrggbb, got {text!r}'
        raise ValueError(msg)
    try:
        return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
    except ValueError:
        msg = f'--palette colours are #rrggbb, got {text!r}'
        raise ValueError(msg) from None


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``predict`` on the ``torchgeo-ssg2`` command line.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers``.

    Returns:
        The sub-command's parser.
    """
    parser = subparsers.add_parser(
        'predict',
        help='predict rasters of any size with a trained SSG2/PTAViT checkpoint',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=(
            'Predict GeoTIFFs (of any size) with overlapping sliding windows and '
            'write tiled, compressed, georeferenced class-index GeoTIFFs with a '
            'colour table and class names (OUT_probabilities.tif / '
            'OUT_uncertainty.tif on request). One raster goes to --output; a '
            'folder, glob or list of rasters goes to --output-dir, on one device '
            'or, with --accelerator/--devices/--num-nodes, many (DDP). '
            "Lightning's own predict (a config with RasterPredictDataModule and "
            'RasterPredictionWriter) is `torchgeo predict --config '
            'experiments/predict_ssg2.yaml --ckpt_path CKPT`, or '
            '`torchgeo-ssg2 predict --config ...`.'
        ),
    )
    parser.add_argument('--checkpoint', required=True, help='SSG2Task/PTAViTTask .ckpt')
    parser.add_argument(
        '--input',
        required=True,
        nargs='+',
        help='raster file(s), folder(s), glob pattern(s) or a .txt list of paths',
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument('--output', default=None, help='output GeoTIFF (one input)')
    where.add_argument(
        '--output-dir',
        default=None,
        help='output folder, <input stem>.tif per input; complete outputs are skipped',
    )
    parser.add_argument('--window', type=int, default=256, help='window side (px)')
    parser.add_argument('--overlap', type=int, default=64, help='window overlap (px)')
    parser.add_argument('--batch-size', type=int, default=4, help='windows per batch')
    parser.add_argument(
        '--num-workers', type=int, default=0, help='processes reading windows'
    )
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace (predict again) existing outputs',
    )
    parser.add_argument(
        '--probabilities', action='store_true', help='write OUT_probabilities.tif'
    )
    parser.add_argument(
        '--uncertainty',
        action='store_true',
        help='write OUT_uncertainty.tif (normalised entropy)',
    )
    parser.add_argument(
        '--cog', action='store_true', help='Cloud-Optimized GeoTIFFs with overviews'
    )
    parser.add_argument(
        '--class-names',
        nargs='+',
        default=None,
        help="class names (the checkpoint's dataset's, else class_0, ...)",
    )
    parser.add_argument(
        '--palette',
        nargs='+',
        default=None,
        metavar='#RRGGBB',
        help="colour of each class (the checkpoint's dataset's, else a fixed palette)",
    )
    parser.add_argument(
        '--supports',
        choices=('raster', 'bank'),
        default='raster',
        help='SSG2 supports: other windows of the input, or chips of --bank-images',
    )
    parser.add_argument(
        '--bank-images',
        nargs='+',
        default=None,
        help='support images (files, folders, globs), cut into window-sized chips',
    )
    parser.add_argument(
        '--sequence-length', type=int, default=None, help="supports T (the task's)"
    )
    parser.add_argument('--support-seed', type=int, default=0, help='support seed')
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
    parser.add_argument(
        '--device',
        default='auto',
        help='torch device (cpu, cuda, cuda:1) or auto: the accelerator if any',
    )
    parser.add_argument(
        '--accelerator',
        choices=('auto', 'cpu', 'gpu'),
        default=None,
        help='with --devices/--num-nodes: DDP over many processes (--output-dir)',
    )
    parser.add_argument('--devices', type=int, default=1, help='devices per node')
    parser.add_argument('--num-nodes', type=int, default=1, help='nodes')
    parser.add_argument(
        '--shard',
        choices=('auto', 'rasters', 'strips'),
        default='auto',
        help='how DDP shares the work: auto cuts a raster with more windows than '
        "a rank's share into strips of window rows; rasters: whole rasters only; "
        'strips: every raster into one strip per rank',
    )
    parser.add_argument(
        '--vrt', action='store_true', help='write VRT mosaics (one per CRS)'
    )
    parser.add_argument(
        '--keep-going',
        action='store_true',
        help='report and skip bad rasters instead of stopping before any work',
    )
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.set_defaults(func=_run_command)
    return parser
