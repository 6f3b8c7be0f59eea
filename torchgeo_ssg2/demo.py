"""The whole job on the embedded Dubai demo data, on the CPU: ``make demo``.

1. Train SSG2 (tiny preset) on random 64-px patches of the training images with
   Lightning, seed fixed, for ``--max-steps`` steps (stopping early if the time
   budget for training runs out).
2. Evaluate on held-out (test-split) images: torchgeo's metrics on a fixed,
   evenly spread set of 64-px test windows with fixed supports.
3. Predict one whole held-out image with the sliding-window predictor
   (:func:`torchgeo_ssg2.inference.predict_raster`, supports from a bank of training
   patches); the JPEG is written to a temporary GeoTIFF without CRS first. The
   stitched map is scored against the image's mask as well.
4. Write ``prediction.png`` (image | truth | prediction), ``episode.png`` (one
   held-out episode: target, supports, the per-support partial views and the
   result), ``metrics.json`` and the checkpoint into one output folder, and print
   where they are.

Run ``python -m torchgeo_ssg2.demo --help`` for the options.
"""

import argparse
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Idle OpenMP threads sleep instead of spinning: on a busy machine spinning threads
# made a training step ~20x slower (68 s against 3.4 s, tiny preset, 2 threads).
# Must be set before torch starts its OpenMP runtime.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import matplotlib

matplotlib.use('agg')

import matplotlib.pyplot as plt
import numpy as np
import rasterio
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import Subset
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassJaccardIndex,
)

from .datamodules import DubaiAerialDataModule
from .datasets import DubaiAerial, GridPatchDataset
from .inference import predict_raster
from .samplers import SupportBank
from .trainers import SSG2Task

__all__ = ('HeldOutDubaiDataModule', 'main', 'run_demo')

#: Training recipe of the demo (see ``--help``): the paper's optimiser settings
#: (RAdam, lr 1e-3, constant) and one support per target, chosen by the runs in
#: ``results/demo_tuning`` (seed 0): T = 1 for 1,200 steps scored a held-out mean
#: IoU of 0.466, T = 2 for the 700 steps that take about as long 0.384 (cosine,
#: 2e-3), and T = 1 with a cosine schedule at 2e-3 or 3e-3 0.445 and 0.455.
LR = 1e-3
LR_SCHEDULE = 'constant'
WARMUP_STEPS = 0


class HeldOutDubaiDataModule(DubaiAerialDataModule):
    """The Dubai datamodule, testing on an evenly spread subset of the test grid.

    Set :attr:`eval_windows` to the number of test windows to keep (None: all);
    also the base of the Dubai study in ``scripts/experiment.py``.
    """

    eval_windows: int | None = None

    def setup(self, stage: str) -> None:
        """Set up the datasets; subsample the test episodes.

        Args:
            stage: Either 'fit', 'validate', 'test', or 'predict'.
        """
        super().setup(stage)
        if stage == 'test' and self.eval_windows is not None:
            n = len(self.test_dataset)
            count = min(self.eval_windows, n)
            keep = np.unique(np.linspace(0, n - 1, count).astype(int))
            self.test_dataset = Subset(self.test_dataset, keep.tolist())


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m torchgeo_ssg2.demo',
        description='Train, evaluate and apply SSG2 on the embedded Dubai demo data.',
    )
    parser.add_argument('--root', default='data/dubai_aerial/data')
    parser.add_argument('--output', default='outputs/demo')
    parser.add_argument('--preset', default='tiny')
    parser.add_argument('--max-steps', type=int, default=1200)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--patch-size', type=int, default=64)
    parser.add_argument('--sequence-length', type=int, default=1)
    parser.add_argument(
        '--eval-windows',
        type=int,
        default=96,
        help='test windows scored (evenly spread over the held-out images)',
    )
    parser.add_argument('--window', type=int, default=128)
    parser.add_argument('--overlap', type=int, default=32)
    parser.add_argument(
        '--train-minutes',
        type=float,
        default=5.5,
        help='training stops early when this budget is spent',
    )
    parser.add_argument('--lr', type=float, default=LR, help='peak learning rate')
    parser.add_argument(
        '--lr-schedule',
        choices=('constant', 'cosine'),
        default=LR_SCHEDULE,
        help='cosine: decays to lr/100 over --max-steps',
    )
    parser.add_argument('--warmup-steps', type=int, default=WARMUP_STEPS)
    parser.add_argument(
        '--threads',
        type=int,
        default=1,
        help='torch CPU threads (one is fastest for the tiny preset on 2 cores)',
    )
    parser.add_argument(
        '--figure-window',
        type=int,
        default=192,
        help='size of the held-out episode drawn in episode.png',
    )
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def _summary(values: dict[str, Any], prefix: str, labels: Sequence[str]) -> dict:
    """Pick the headline numbers out of torchgeo's logged metrics.

    Args:
        values: Metric name -> value, as logged by the task.
        prefix: 'test_' etc.
        labels: Class names.

    Returns:
        Overall accuracy, mean IoU, mean F1 and per-class IoU/F1.
    """
    f = {k: float(v) for k, v in values.items()}
    return {
        'overall_accuracy': f.get(f'{prefix}OverallAccuracy'),
        'mean_iou': f.get(f'{prefix}AverageJaccardIndex'),
        'mean_f1': f.get(f'{prefix}AverageF1Score'),
        'iou': {c: f.get(f'{prefix}ClasswiseJaccardIndex_{c}') for c in labels},
        'f1': {c: f.get(f'{prefix}ClasswiseF1Score_{c}') for c in labels},
    }


def _score_map(
    prediction: np.ndarray, truth: np.ndarray, labels: Sequence[str], ignore: int
) -> dict[str, Any]:
    """Metrics of a whole predicted class map against its mask.

    Args:
        prediction: H x W class indices.
        truth: H x W class indices (``ignore`` excluded).
        labels: Class names.
        ignore: Ignore index.

    Returns:
        Overall accuracy, mean IoU, mean F1 and per-class IoU.
    """
    nc = len(labels)
    pred = torch.from_numpy(prediction.astype(np.int64))[None]
    true = torch.from_numpy(truth.astype(np.int64))[None]
    kwargs: dict[str, Any] = {'num_classes': nc, 'ignore_index': ignore}
    iou = MulticlassJaccardIndex(average='none', **kwargs)(pred, true)
    valid = true != ignore
    return {
        'overall_accuracy': float(
            MulticlassAccuracy(average='micro', **kwargs)(pred, true)
        ),
        'mean_iou': float(
            MulticlassJaccardIndex(average='macro', **kwargs)(pred, true)
        ),
        'mean_f1': float(MulticlassF1Score(average='macro', **kwargs)(pred, true)),
        # None: the class is neither in the mask nor in the prediction (the mean
        # leaves it out too)
        'iou': {
            c: float(v) if bool((((pred == k) | (true == k)) & valid).any()) else None
            for k, (c, v) in enumerate(zip(labels, iou, strict=True))
        },
    }


def _write_geotiff(image: np.ndarray, path: Path) -> None:
    """Write an H x W x 3 uint8 image as a GeoTIFF without CRS.

    Args:
        image: The RGB image.
        path: Output path.
    """
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(
            path,
            'w',
            driver='GTiff',
            height=image.shape[0],
            width=image.shape[1],
            count=3,
            dtype='uint8',
        ) as dst:
            dst.write(image.transpose(2, 0, 1))


def _plot_episode(
    task: SSG2Task,
    datamodule: HeldOutDubaiDataModule,
    args: argparse.Namespace,
    path: Path,
    steps: int,
) -> None:
    """Draw one held-out episode: target, supports, partial views and result.

    The episode is the test-split window (``--figure-window`` pixels, fixed
    supports) with the most classes present among the first 64.

    Args:
        task: The trained task (attached to the trainer of *datamodule*).
        datamodule: The demo's datamodule (its ``aug`` normalises the episode).
        args: Parsed command-line options.
        path: Output PNG.
        steps: Training steps done, for the title.
    """
    source = HeldOutDubaiDataModule(
        batch_size=1,
        patch_size=args.figure_window,
        sequence_length=args.sequence_length,
        seed=args.seed,
        root=args.root,
    )
    source.setup('test')
    episodes = source.test_dataset
    candidates = range(min(len(episodes), 64))
    index = max(candidates, key=lambda i: len(torch.unique(episodes[i]['mask'])))
    batch = datamodule.aug({k: v.unsqueeze(0) for k, v in episodes[index].items()})
    task.eval()
    with torch.inference_mode():
        outputs = task(batch['image'], batch['support_image'])
    sample = task.figure_sample(batch, outputs)
    fig = datamodule.plot(
        sample,
        suptitle=f'SSG2 ({args.preset}, {steps} steps) on a held-out episode: '
        'target, supports, partial views (T \u2229 S, T \u222a S), result',
    )
    if fig is not None:
        fig.savefig(path, dpi=100, bbox_inches='tight')
        plt.close(fig)


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    """Run the demo (see the module docstring).

    Args:
        args: Parsed command-line options.

    Returns:
        The metrics dictionary written to ``metrics.json``.
    """
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed, workers=True)
    labels = list(DubaiAerial.classes)
    ignore = DubaiAerial.ignore_index

    datamodule = HeldOutDubaiDataModule(
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        sequence_length=args.sequence_length,
        length=args.max_steps * args.batch_size,
        seed=args.seed,
        root=args.root,
    )
    task = SSG2Task(
        preset=args.preset,
        in_channels=3,
        num_classes=len(labels),
        labels=labels,
        ignore_index=ignore,
        sequence_length=args.sequence_length,
        optimizer='radam',
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps,
        min_lr=args.lr / 100,
        eps=1e-6,
        # the attention token grids follow the training chip size (the
        # original's spatial_size_init); at 64 px the default 256 would give
        # fuse_first 4096 tokens of 4x4 px, 3.5x slower steps
        model_kwargs={'spatial_size': args.patch_size},
    )
    trainer = Trainer(
        accelerator='cpu',
        devices=1,
        max_steps=args.max_steps,
        max_time={'minutes': args.train_minutes},
        limit_val_batches=0,
        logger=CSVLogger(out, name='logs'),
        default_root_dir=out,
        log_every_n_steps=10,
        enable_progress_bar=True,
        enable_model_summary=False,
    )
    print(
        f'[demo] training SSG2 ({args.preset}) for up to {args.max_steps} steps '
        f'(batch {args.batch_size}, {args.patch_size}-px patches, '
        f'T={args.sequence_length}) on {args.root}'
    )
    t0 = time.perf_counter()
    trainer.fit(task, datamodule)
    train_seconds = time.perf_counter() - t0
    steps = int(trainer.global_step)
    checkpoint = out / 'ssg2_demo.ckpt'
    trainer.save_checkpoint(checkpoint)

    # Held-out windows: a fixed, evenly spread subset of the test-split grid.
    datamodule.eval_windows = args.eval_windows
    print(f'[demo] evaluating on {args.eval_windows} held-out test windows')
    t0 = time.perf_counter()
    (tested,) = trainer.test(task, datamodule, verbose=False)
    eval_seconds = time.perf_counter() - t0

    # Whole held-out image through the sliding-window predictor.
    test_images = DubaiAerial(args.root, split='test')
    index = min(range(len(test_images)), key=lambda i: np.prod(test_images.sizes[i]))
    image_path, _ = test_images.files[index]
    sample = test_images[index]
    bank_source = DubaiAerial(args.root, split='train', cache=True)
    bank = SupportBank(
        GridPatchDataset(bank_source, args.window, stride=args.window),
        sequence_length=args.sequence_length,
        seed=args.seed,
    )
    print(f'[demo] predicting the whole held-out image {image_path}')
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tif = Path(tmp) / 'input.tif'
        _write_geotiff(sample['image'].permute(1, 2, 0).byte().numpy(), tif)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', rasterio.errors.NotGeoreferencedWarning)
            warnings.filterwarnings('ignore', message='.*CRS.*')
            paths = predict_raster(
                task,
                tif,
                Path(tmp) / 'prediction.tif',
                window=args.window,
                overlap=args.overlap,
                batch_size=args.batch_size,
                supports='bank',
                support_bank=bank,
                sequence_length=args.sequence_length,
                progress=False,
            )
            with rasterio.open(paths['classes']) as src:
                prediction = src.read(1)
    predict_seconds = time.perf_counter() - t0
    truth = sample['mask'].numpy()

    sample['prediction'] = torch.from_numpy(prediction.astype(np.int64))
    fig = test_images.plot(
        sample,
        suptitle=f'SSG2 ({args.preset}, {steps} steps): held-out {Path(image_path).parent.parent.name}/{Path(image_path).name}',
    )
    png = out / 'prediction.png'
    fig.savefig(png, dpi=120, bbox_inches='tight')
    plt.close(fig)
    _plot_episode(task, datamodule, args, out / 'episode.png', steps)

    metrics = {
        'model': f'SSG2 ({args.preset} preset)',
        'data': str(args.root),
        'seed': args.seed,
        'train_steps': steps,
        'batch_size': args.batch_size,
        'patch_size': args.patch_size,
        'sequence_length': args.sequence_length,
        'lr': args.lr,
        'lr_schedule': args.lr_schedule,
        'warmup_steps': args.warmup_steps,
        'threads': args.threads,
        'held_out_windows': {
            'count': len(datamodule.test_dataset),
            **_summary(tested, 'test_', labels),
        },
        'held_out_image': {
            'file': str(image_path),
            'window': args.window,
            'overlap': args.overlap,
            **_score_map(prediction, truth, labels, ignore),
        },
        'seconds': {
            'train': round(train_seconds, 1),
            'evaluate': round(eval_seconds, 1),
            'predict': round(predict_seconds, 1),
            'total': round(time.perf_counter() - start, 1),
        },
        'checkpoint': str(checkpoint),
    }
    (out / 'metrics.json').write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m torchgeo_ssg2.demo``.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    args = _parse(argv)
    if not os.path.isdir(args.root):
        print(
            f'error: demo data not found at {args.root!r} (run from the repository root)'
        )
        return 2
    logging.getLogger('lightning.pytorch').setLevel(logging.WARNING)
    metrics = run_demo(args)
    out = Path(args.output)
    windows = metrics['held_out_windows']
    whole = metrics['held_out_image']
    print(
        f'[demo] {metrics["train_steps"]} steps in {metrics["seconds"]["train"]} s; '
        f'held-out windows: mean IoU {windows["mean_iou"]:.3f}, mean F1 '
        f'{windows["mean_f1"]:.3f}; whole image: mean IoU {whole["mean_iou"]:.3f}'
    )
    print(f'[demo] pictures: {(out / "prediction.png").resolve()}, episode.png')
    print(f'[demo] metrics: {(out / "metrics.json").resolve()}')
    print(f'[demo] total time {metrics["seconds"]["total"]} s')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
