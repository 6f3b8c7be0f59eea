#!/usr/bin/env python3
"""SSG2 vs the PTAViT baseline on the embedded Dubai demo data, on the CPU.

Both models get the same preset, seed, data pipeline (patches, augmentation, batch
size) and the same number of gradient updates; PTAViT ignores the supports. Both
are scored on the same evenly spread held-out (test-split) windows, SSG2 with fixed
supports from the test split. Prints a markdown table.

``--precision`` is passed to Lightning's ``Trainer`` (e.g. ``bf16-mixed`` for CPU
bf16 autocast; it covers training and the test pass) and ``--models`` restricts
the run to some of the models:

    python scripts/compare_dubai.py --steps 200
    python scripts/compare_dubai.py --steps 200 --models SSG2 --precision bf16-mixed
"""

import argparse
import json
import time
from typing import Any

from lightning.pytorch import Trainer, seed_everything

from torchgeo_ssg2.datasets import DubaiAerial
from torchgeo_ssg2.demo import HeldOutDubaiDataModule as HeldOutDubai
from torchgeo_ssg2.trainers import PTAViTTask, SSG2Task


def make_task(name: str, args: argparse.Namespace) -> SSG2Task | PTAViTTask:
    """Build SSG2 (``name == 'SSG2'``) or PTAViT with the comparison's settings."""
    labels = list(DubaiAerial.classes)
    common = {
        'preset': args.preset,
        'in_channels': 3,
        'num_classes': len(labels),
        'labels': labels,
        'ignore_index': DubaiAerial.ignore_index,
        'optimizer': 'radam',
        'lr': 1e-3,
        'eps': 1e-6,
        # attention grids for the training chip size, as in make demo
        'model_kwargs': {'spatial_size': args.patch_size},
    }
    if name == 'SSG2':
        return SSG2Task(sequence_length=args.sequence_length, **common)
    return PTAViTTask(**common)


MODELS = ('SSG2', 'PTAViT')


def make_trainer(steps: int, precision: str = '32-true') -> Trainer:
    """A quiet CPU trainer for *steps* updates without validation.

    Args:
        steps: Number of gradient updates.
        precision: Lightning's ``precision`` (e.g. ``'32-true'``, ``'bf16-mixed'``).

    Returns:
        The trainer.
    """
    return Trainer(
        accelerator='cpu',
        devices=1,
        max_steps=steps,
        precision=precision,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train and score one model; return its result row."""
    seed_everything(args.seed, workers=True)
    task = make_task(name, args)
    dm = HeldOutDubai(
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        sequence_length=args.sequence_length,
        length=args.steps * args.batch_size,
        seed=args.seed,
        root=args.root,
    )
    dm.eval_windows = args.eval_windows
    trainer = make_trainer(args.steps, args.precision)
    t0 = time.perf_counter()
    trainer.fit(task, dm)
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    (metrics,) = trainer.test(task, dm, verbose=False)
    test_seconds = time.perf_counter() - t0
    steps = int(trainer.global_step)
    return {
        'model': name,
        'precision': args.precision,
        'params': sum(p.numel() for p in task.model.parameters()),
        'steps': steps,
        'mean_iou': float(metrics['test_AverageJaccardIndex']),
        'mean_f1': float(metrics['test_AverageF1Score']),
        'overall_accuracy': float(metrics['test_OverallAccuracy']),
        'train_seconds': train_seconds,
        'seconds_per_update': train_seconds / max(steps, 1),
        'test_seconds': test_seconds,
        'windows': len(dm.test_dataset),
    }


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The data, model and schedule options shared by the Dubai comparison scripts."""
    parser.add_argument('--root', default='data/dubai_aerial/data')
    parser.add_argument('--preset', default='tiny')
    parser.add_argument('--steps', type=int, default=200)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--patch-size', type=int, default=64)
    parser.add_argument('--sequence-length', type=int, default=2)
    parser.add_argument('--eval-windows', type=int, default=96)
    parser.add_argument('--seed', type=int, default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument(
        '--precision',
        default='32-true',
        help="Lightning Trainer precision, e.g. '32-true' or 'bf16-mixed'",
    )
    parser.add_argument(
        '--models',
        nargs='+',
        choices=MODELS,
        default=list(MODELS),
        help='models to run (default: both)',
    )
    parser.add_argument('--json', help='also write the rows to this JSON file')
    args = parser.parse_args()

    rows = [run(name, args) for name in args.models]
    print(
        f'\nDubai demo data, {args.preset} preset, seed {args.seed}, {args.steps} '
        f'gradient updates of batch {args.batch_size} ({args.patch_size}-px patches, '
        f'SSG2 T={args.sequence_length}), CPU, precision {args.precision}; '
        f'scored on {rows[0]["windows"]} held-out test windows.\n'
    )
    print(
        '| model | precision | params | updates | mean IoU | mean F1 | overall acc. '
        '| train wall time (s) | s / update | test wall time (s) |'
    )
    print('|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(
            f'| {r["model"]} | {r["precision"]} | {r["params"] / 1e6:.2f} M '
            f'| {r["steps"]} '
            f'| {r["mean_iou"]:.3f} | {r["mean_f1"]:.3f} | {r["overall_accuracy"]:.3f} '
            f'| {r["train_seconds"]:.0f} | {r["seconds_per_update"]:.2f} '
            f'| {r["test_seconds"]:.0f} |'
        )
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'args': vars(args), 'rows': rows}, f, indent=2)


if __name__ == '__main__':
    main()
