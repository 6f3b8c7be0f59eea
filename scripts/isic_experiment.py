#!/usr/bin/env python3
"""SSG2 vs PTAViT vs torchgeo's U-Net on real ISIC 2017 lesion images (CPU-sized).

Trains the three models with the same number of gradient updates and the same batch
size on part of the 2,000 ISIC 2017 training images (``isic2017_256`` layout,
carved with a fixed seed), then scores them on held-out images with the per-image
Dice, the per-image IoU and the ISIC 2018 thresholded Jaccard
(:class:`torchgeo_ssg2.metrics.ThresholdedJaccard`). Writes ``results.json`` and
``results.md`` to ``--out``.

Example: the run reported in the README (about 4 min on a 2-core CPU shared with
another job; SSG2's 100 steps take about 2 min; the ``test`` presets and 64x64
images keep it CPU-sized)::

    .venv/bin/python scripts/isic_experiment.py \
        --root ../shared/realdata/isic2017_256 --out outputs/isic_experiment \
        --size 64 --batch-size 4 --steps 100 --sequence-length 2 \
        --train-images 400 --test-images 200 --ssg2-preset test --ptavit-preset test
"""

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import lightning
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from torchgeo.tasks import SemanticSegmentation

from torchgeo_ssg2.datamodules import ISIC2018DataModule
from torchgeo_ssg2.metrics import ThresholdedJaccard, binary_jaccard_per_image
from torchgeo_ssg2.trainers import PTAViTTask, SSG2Task

MODELS = ('ssg2', 'ptavit', 'unet')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--root', default='../shared/realdata/isic2017_256')
    parser.add_argument('--out', default='outputs/isic_experiment')
    parser.add_argument('--models', nargs='+', default=list(MODELS), choices=MODELS)
    parser.add_argument('--size', type=int, default=64, help='image side (x32)')
    parser.add_argument('--steps', type=int, default=100, help='gradient updates')
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--sequence-length', type=int, default=2, help='SSG2 T')
    parser.add_argument('--train-images', type=int, default=400)
    parser.add_argument(
        '--test-images',
        type=int,
        default=200,
        help='held-out images scored (a seeded subset of the rest; 0 = all)',
    )
    parser.add_argument('--ssg2-preset', default='tiny')
    parser.add_argument('--ptavit-preset', default='tiny')
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=2)
    return parser.parse_args(argv)


def datamodule(args: argparse.Namespace, model: str, total: int) -> ISIC2018DataModule:
    """Carve train / (one-image) val / test out of the folder with a fixed seed."""
    train = args.train_images / total
    val = 2 / total
    t = args.sequence_length if model == 'ssg2' else 1
    return ISIC2018DataModule(
        root=args.root,
        batch_size=args.batch_size,
        size=args.size,
        sequence_length=t,
        eval_sequence_length=t,
        seed=args.seed,
        split_fractions=(train, val, 1 - train - val),
        split_seed=args.seed,
    )


class Progress(lightning.Callback):
    """Print the step and the training loss every *every* steps."""

    def __init__(self, name: str, every: int) -> None:
        self.name = name
        self.every = max(1, every)
        self.start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: lightning.Trainer,
        pl_module: lightning.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if step % self.every == 0 or step == trainer.max_steps:
            loss = outputs['loss'] if isinstance(outputs, dict) else outputs
            elapsed = time.perf_counter() - self.start
            print(
                f'{self.name}: step {step}/{trainer.max_steps} '
                f'loss {float(loss):.4f} ({elapsed:.0f} s)',
                flush=True,
            )


def build_task(args: argparse.Namespace, model: str) -> lightning.LightningModule:
    labels = ['background', 'lesion']
    # attention token grids for the image size (the original's spatial_size_init)
    model_kwargs = {'spatial_size': args.size}
    if model == 'ssg2':
        return SSG2Task(
            preset=args.ssg2_preset,
            in_channels=3,
            num_classes=2,
            labels=labels,
            sequence_length=args.sequence_length,
            lr=args.lr,
            model_kwargs=model_kwargs,
        )
    if model == 'ptavit':
        return PTAViTTask(
            preset=args.ptavit_preset,
            in_channels=3,
            num_classes=2,
            labels=labels,
            lr=args.lr,
            model_kwargs=model_kwargs,
        )
    unet = SemanticSegmentation(
        model='unet',
        backbone='resnet18',
        weights=None,
        in_channels=3,
        task='multiclass',
        num_classes=2,
        labels=labels,
        loss='ce',
        lr=args.lr,
    )
    # torchgeo's ReduceLROnPlateau needs a validation loss, which this run does not
    # compute: train with AdamW at a constant learning rate instead.
    unet.configure_optimizers = (  # type: ignore[method-assign]
        lambda: torch.optim.AdamW(unet.parameters(), lr=args.lr)
    )
    return unet


@torch.no_grad()
def evaluate(
    task: lightning.LightningModule,
    dm: ISIC2018DataModule,
    indices: list[int],
    batch_size: int,
) -> dict[str, float]:
    """Per-image Dice, IoU and thresholded Jaccard of the lesion class."""
    dm.setup('test')
    loader = DataLoader(
        Subset(dm.test_dataset, indices),  # type: ignore[arg-type]
        batch_size=batch_size,
        collate_fn=dm.collate_fn,
    )
    task.eval()
    tj = ThresholdedJaccard()
    dice: list[Tensor] = []
    iou: list[Tensor] = []
    for batch in loader:
        batch = dm.aug(batch)
        pred = task.predict_step(batch, 0)['probabilities'].argmax(1)
        mask = batch['mask']
        tj.update(pred, mask)
        iou.append(binary_jaccard_per_image(pred, mask))
        p, m = pred.flatten(1).bool(), mask.flatten(1).bool()
        inter = (p & m).sum(1).float()
        total = p.sum(1).float() + m.sum(1).float()
        dice.append(torch.where(total > 0, 2 * inter / total.clamp_min(1), 1.0))
    return {
        'dice': float(torch.cat(dice).mean()),
        'iou': float(torch.cat(iou).mean()),
        'thresholded_jaccard': float(tj.compute()),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    total = len(os.listdir(os.path.join(args.root, 'train', 'images')))
    results: dict[str, Any] = {
        'command': ' '.join([os.path.basename(sys.executable), *sys.argv]),
        'settings': vars(args),
        'data': (
            f'ISIC 2017 Part 1 training images ({args.root}), resized to '
            f'{args.size}x{args.size} (stretch); seeded carve: {args.train_images} '
            f'train, 2 val (unused), rest test, of which {args.test_images or "all"} '
            'scored'
        ),
        'metrics': 'per-image mean Dice and IoU of the lesion; ISIC 2018 '
        'thresholded Jaccard (per-image IoU < 0.65 counts as 0)',
        'machine': f'{platform.processor() or platform.machine()}, CPU, '
        f'{args.threads} threads',
        'models': {},
    }
    for model in args.models:
        lightning.seed_everything(args.seed, workers=True)
        dm = datamodule(args, model, total)
        task = build_task(args, model)
        trainer = lightning.Trainer(
            accelerator='cpu',
            max_steps=args.steps,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=args.out,
            callbacks=[Progress(model, args.steps // 10)],
        )
        start = time.perf_counter()
        trainer.fit(task, datamodule=dm)
        train_s = time.perf_counter() - start
        dm.setup('test')
        n = len(dm.test_dataset)  # type: ignore[arg-type]
        rng = np.random.default_rng(args.seed)
        k = n if args.test_images <= 0 else min(args.test_images, n)
        indices = sorted(rng.choice(n, size=k, replace=False).tolist())
        print(f'{model}: scoring {k} held-out images', flush=True)
        start = time.perf_counter()
        scores = evaluate(task, dm, indices, max(args.batch_size, 8))
        results['models'][model] = {
            **scores,
            'parameters': sum(p.numel() for p in task.parameters()),
            'steps': trainer.global_step,
            'train_seconds': round(train_s, 1),
            'eval_seconds': round(time.perf_counter() - start, 1),
            'test_images': k,
        }
        print(model, results['models'][model], flush=True)

    with open(os.path.join(args.out, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
    names = {
        'ssg2': f'SSG2 ({args.ssg2_preset}, T={args.sequence_length})',
        'ptavit': f'PTAViT ({args.ptavit_preset})',
        'unet': 'torchgeo SemanticSegmentation U-Net (resnet18, weights=None)',
    }
    lines = [
        '| model | params | steps | Dice | IoU | thresholded Jaccard | train s |',
        '|---|---|---|---|---|---|---|',
    ]
    for model, r in results['models'].items():
        lines.append(
            f'| {names[model]} | {r["parameters"] / 1e6:.2f} M | {r["steps"]} | '
            f'{r["dice"]:.3f} | {r["iou"]:.3f} | {r["thresholded_jaccard"]:.3f} | '
            f'{r["train_seconds"]:.0f} |'
        )
    text = '\n'.join(
        [
            '# ISIC 2017 lesion segmentation: SSG2 vs baselines (CPU-sized run)',
            '',
            f'Command: `{results["command"]}`',
            '',
            f'Data: {results["data"]}.',
            f'Metrics: {results["metrics"]}.',
            f'Machine: {results["machine"]}. Seed {args.seed}; batch size '
            f'{args.batch_size}; the same number of gradient updates for every model.',
            '',
            *lines,
            '',
        ]
    )
    with open(os.path.join(args.out, 'results.md'), 'w') as f:
        f.write(text)
    print(text)
    return results


if __name__ == '__main__':
    main()
