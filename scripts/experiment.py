#!/usr/bin/env python3
"""SSG2 against its baselines, over seeds, with learning curves and uncertainty.

One runner for every comparison of the project. Each run trains one model for a
fixed number of gradient updates on the same data, patches, augmentation, batch
size and optimiser (RAdam, lr 1e-3, eps 1e-6, constant) as every other model of
the study, scores a fixed held-out set every ``--eval-every`` updates (a learning
curve against updates and against training wall time), and at the end measures how
well each uncertainty signal ranks the wrongly classified pixels (AUROC of error
detection) and how calibrated the probabilities are (reliability bins).

Models: ``ssg2`` (SSG2Task), ``ptavit`` (PTAViTTask, the paper's UNet-like baseline
on the same backbone) and ``unet`` (torchgeo's ``SemanticSegmentation`` U-Net,
resnet18, random init, cross-entropy). SSG2 loss variants are named runs:
``ssg2`` uses the package defaults, ``--ssg2-variant NAME:empty=...,fuzzy=...``
adds one more (see ``SSG2Loss``).

Data (``dubai``): the embedded Dubai tiles, whole-image split of the datamodule;
training on random patches of the training images, scoring on an evenly spread set
of test-split windows with fixed supports from the test split. (``isic``): the ISIC
2017 images of ``--root`` (``isic2017_256`` layout) resized to ``--size``; a seeded
carve of training and held-out images; scoring by per-image lesion Dice and the ISIC
2018 thresholded Jaccard.

Each run writes ``<out>/<run>_seed<k>.json`` once it has finished (through a
temporary file); finished runs are skipped, so a study can span several sittings.
``plot`` draws the curves (mean +- sd over seeds) and prints the summary table.

The studies reported in the README::

    python scripts/experiment.py dubai --out results/dubai --seeds 0 1 2 \\
        --steps 1500 --eval-every 250 --models ssg2 ptavit unet
    python scripts/experiment.py isic --root PATH/isic2017_256 --out results/isic \\
        --seeds 0 1 --steps 1000 --eval-every 250 --models ssg2 ptavit unet
    python scripts/experiment.py plot results/dubai results/isic
"""

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import lightning
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Subset
from torchgeo.tasks import SemanticSegmentation
from torchmetrics.classification import BinaryAUROC, MulticlassJaccardIndex

from torchgeo_ssg2.datamodules import DubaiAerialDataModule, ISIC2018DataModule
from torchgeo_ssg2.datasets import DubaiAerial
from torchgeo_ssg2.trainers import (
    PTAViTTask,
    SSG2Task,
    normalised_entropy,
    sequence_uncertainty,
)

MODELS = ('ssg2', 'ptavit', 'unet')
LR, EPS = 1e-3, 1e-6
BINS = 10


# --------------------------------------------------------------------- data


class _EvalOnHeldOut:
    """Mixin: validation runs on a fixed subset of the held-out (test-split) set."""

    eval_items: int | None = None

    @staticmethod
    def _keep(n: int, count: int) -> list[int]:
        """The held-out items scored: evenly spread over the split."""
        return np.unique(np.linspace(0, n - 1, count).astype(int)).tolist()

    def setup(self, stage: str) -> None:
        super().setup(stage)  # type: ignore[misc]
        if stage in ('fit', 'validate'):
            super().setup('test')  # type: ignore[misc]
            data = self.test_dataset  # type: ignore[attr-defined]
            n = len(data)
            count = n if not self.eval_items else min(self.eval_items, n)
            self.val_dataset = Subset(data, self._keep(n, count))


class DubaiStudy(_EvalOnHeldOut, DubaiAerialDataModule):
    """Dubai datamodule validating on evenly spread test-split windows."""


class ISICStudy(_EvalOnHeldOut, ISIC2018DataModule):
    """ISIC datamodule validating on a seeded subset of the held-out images."""

    @staticmethod
    def _keep(n: int, count: int) -> list[int]:
        rng = np.random.default_rng(0)
        return sorted(rng.choice(n, size=count, replace=False).tolist())


def build_datamodule(args: argparse.Namespace, model: str, seed: int) -> Any:
    """The study's datamodule for one run (SSG2 and the baselines get the same)."""
    t = args.sequence_length
    if args.dataset == 'dubai':
        dm = DubaiStudy(
            root=args.root,
            batch_size=args.batch_size,
            patch_size=args.size,
            sequence_length=t,
            support_strategy=args.support_strategy,
            length=args.steps * args.batch_size,
            seed=seed,
            num_workers=0,
        )
    else:
        total = len(os.listdir(os.path.join(args.root, 'train', 'images')))
        train = args.train_images / total
        val = 2 / total
        dm = ISICStudy(
            root=args.root,
            batch_size=args.batch_size,
            size=args.size,
            sequence_length=t,
            eval_sequence_length=t,
            seed=seed,
            split_fractions=(train, val, 1 - train - val),
            split_seed=0,
        )
    dm.eval_items = args.eval_items
    return dm


def dataset_labels(args: argparse.Namespace) -> tuple[list[str], int | None]:
    """Class names and ignore index of the study's dataset."""
    if args.dataset == 'dubai':
        return list(DubaiAerial.classes), DubaiAerial.ignore_index
    return ['background', 'lesion'], None


# -------------------------------------------------------------------- tasks


class UNetTask(SemanticSegmentation):
    """torchgeo's U-Net task with the study's optimiser (RAdam, constant lr)."""

    def configure_optimizers(self) -> Any:
        return torch.optim.RAdam(self.parameters(), lr=LR, eps=EPS)


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``NAME:key=value,key=value`` -> (NAME, {key: value})."""
    name, _, spec = text.partition(':')
    options = dict(item.split('=', 1) for item in spec.split(',') if item)
    return name, options


def build_task(
    args: argparse.Namespace, model: str, loss: dict[str, str] | None = None
) -> lightning.LightningModule:
    """One model of the study."""
    labels, ignore = dataset_labels(args)
    common: dict[str, Any] = {
        'in_channels': 3,
        'num_classes': len(labels),
        'labels': labels,
        'ignore_index': ignore,
    }
    ours = {
        **common,
        'optimizer': 'radam',
        'lr': LR,
        'eps': EPS,
        # attention token grids for the chip size (the original's spatial_size_init)
        'model_kwargs': {'spatial_size': args.size},
    }
    if model == 'ssg2':
        extra = {}
        if loss:
            if 'empty' in loss:
                extra['loss_empty'] = loss['empty']
            if 'fuzzy' in loss:
                extra['loss_fuzzy_target_null'] = loss['fuzzy']
            if 'fuzzy_weight' in loss:
                extra['loss_fuzzy_weight'] = float(loss['fuzzy_weight'])
        return SSG2Task(
            preset=args.preset,
            sequence_length=args.sequence_length,
            **ours,
            **extra,
        )
    if model == 'ptavit':
        return PTAViTTask(preset=args.preset, **ours)
    return UNetTask(
        model='unet',
        backbone='resnet18',
        weights=None,
        task='multiclass',
        loss='ce',
        lr=LR,
        **common,
    )


# ------------------------------------------------------------------ scoring


@torch.no_grad()
def probabilities(
    task: lightning.LightningModule, batch: dict[str, Any]
) -> tuple[Tensor, dict[str, Tensor]]:
    """Class probabilities B x C x H x W and the uncertainty maps of one batch.

    Returns:
        ``(probabilities, signals)``: ``signals`` maps a name to B x H x W
        uncertainty (higher = less certain): ``entropy`` for every model, and
        ``bracket`` (the sequence bracket) for SSG2.
    """
    if isinstance(task, UNetTask):
        probs = task(batch['image']).softmax(1)
        signals: dict[str, Tensor] = {}
    else:
        out = task.predict_step(batch, 0)
        probs = out['probabilities']
        signals = {}
        if isinstance(task, SSG2Task):
            # the support-sequence bracket, max_k (min_t U - max_t I)
            full = task.model.forward_inference(batch['image'], batch['support_image'])
            signals['bracket'] = sequence_uncertainty(
                full['intersection'], full['union'], probs.shape[1]
            )
    signals['entropy'] = normalised_entropy(probs)
    return probs, signals


class StudyRecorder(lightning.Callback):
    """Scores the held-out set at every validation: curve, uncertainty, calibration.

    The curve point records the updates done, the training wall time (validation
    excluded) and the held-out metrics. At the last validation the error-detection
    AUROC of each uncertainty signal and the reliability bins of the top-class
    probability are recorded too.
    """

    def __init__(self, dataset: str, num_classes: int, ignore_index: int | None):
        self.dataset = dataset
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.curve: list[dict[str, Any]] = []
        self.final: dict[str, Any] = {}
        self.train_seconds = 0.0
        self._mark = 0.0

    # training wall time, validation excluded
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._mark = time.perf_counter()

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        self.train_seconds += time.perf_counter() - self._mark
        self._last = trainer.global_step >= trainer.max_steps
        self._miou = MulticlassJaccardIndex(
            self.num_classes,
            ignore_index=self.ignore_index,
            average='macro',
        )
        self._correct = 0
        self._count = 0
        self._dice: list[Tensor] = []
        self._iou: list[Tensor] = []
        self._auroc: dict[str, BinaryAUROC] = {}
        self._conf = torch.zeros(BINS, dtype=torch.float64)
        self._acc = torch.zeros(BINS, dtype=torch.float64)
        self._n = torch.zeros(BINS, dtype=torch.float64)

    def on_validation_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking:
            return
        was_training = pl_module.training
        pl_module.eval()
        probs, signals = probabilities(pl_module, batch)
        pl_module.train(was_training)
        mask = batch['mask'].long()
        pred = probs.argmax(1)
        valid = (
            torch.ones_like(mask, dtype=torch.bool)
            if self.ignore_index is None
            else mask != self.ignore_index
        )
        self._miou.update(pred, mask)
        self._correct += int(((pred == mask) & valid).sum())
        self._count += int(valid.sum())
        if self.dataset == 'isic':
            p, m = pred.flatten(1).bool(), mask.flatten(1).bool()
            inter = (p & m).sum(1).float()
            total = p.sum(1).float() + m.sum(1).float()
            union = (p | m).sum(1).float()
            self._dice.append(torch.where(total > 0, 2 * inter / total.clamp_min(1), 1))
            self._iou.append(torch.where(union > 0, inter / union.clamp_min(1), 1))
        if not self._last:
            return
        error = (pred != mask)[valid].int()
        for name, signal in signals.items():
            metric = self._auroc.setdefault(name, BinaryAUROC())
            metric.update(signal[valid].float(), error)
        conf = probs.amax(1)[valid].double()
        right = (pred == mask)[valid].double()
        idx = (conf * BINS).long().clamp(0, BINS - 1)
        self._conf.index_add_(0, idx, conf)
        self._acc.index_add_(0, idx, right)
        self._n.index_add_(0, idx, torch.ones_like(conf))

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        point: dict[str, Any] = {
            'step': int(trainer.global_step),
            'train_seconds': round(self.train_seconds, 2),
            'mean_iou': float(self._miou.compute()),
            'pixel_accuracy': self._correct / max(self._count, 1),
        }
        if self._dice:
            dice, iou = torch.cat(self._dice), torch.cat(self._iou)
            point['dice'] = float(dice.mean())
            point['thresholded_jaccard'] = float(torch.where(iou < 0.65, 0, iou).mean())
        heads = {
            k.removeprefix('val_'): float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith('val_IoU_')
        }
        point.update(heads)
        self.curve.append(point)
        print(json.dumps(point), flush=True)
        if self._last:
            n = self._n.clamp_min(1)
            self.final = {
                **point,
                'auroc': {k: float(m.compute()) for k, m in self._auroc.items()},
                'reliability': {
                    'confidence': (self._conf / n).tolist(),
                    'accuracy': (self._acc / n).tolist(),
                    'count': self._n.tolist(),
                },
            }
        self._mark = time.perf_counter()


# ---------------------------------------------------------------------- run


def run_name(model: str, variant: str | None) -> str:
    return variant or model


def run_one(
    args: argparse.Namespace,
    model: str,
    seed: int,
    variant: tuple[str, dict[str, str]] | None,
) -> None:
    name = run_name(model, variant[0] if variant else None)
    out = Path(args.out) / f'{name}_seed{seed}.json'
    if out.exists():
        print(f'{out}: finished, skipped', flush=True)
        return
    torch.set_num_threads(args.threads)
    lightning.seed_everything(seed, workers=True)
    labels, ignore = dataset_labels(args)
    dm = build_datamodule(args, model, seed)
    task = build_task(args, model, variant[1] if variant else None)
    recorder = StudyRecorder(args.dataset, len(labels), ignore)
    trainer = lightning.Trainer(
        accelerator='cpu',
        devices=1,
        max_steps=args.stop_after or args.steps,
        precision=args.precision,
        val_check_interval=args.eval_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=args.out,
        callbacks=[recorder],
    )
    print(f'== {name} seed {seed}', flush=True)
    trainer.fit(task, datamodule=dm)
    result = {
        'run': name,
        'model': model,
        'seed': seed,
        'loss': variant[1] if variant else {},
        'dataset': args.dataset,
        'settings': {
            k: v for k, v in vars(args).items() if k not in ('seeds', 'models')
        },
        'parameters': sum(p.numel() for p in task.parameters()),
        'eval_items': len(dm.val_dataset),
        'command': ' '.join([os.path.basename(sys.executable), *sys.argv]),
        'machine': f'{platform.machine()} CPU, {args.threads} thread(s)',
        'curve': recorder.curve,
        'final': recorder.final,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f'.partial-{os.getpid()}')
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)


# --------------------------------------------------------------------- plot


def load_runs(folder: Path) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob('*_seed*.json')):
        r = json.loads(path.read_text())
        if r['model'] != 'ssg2':  # only SSG2 has a support-sequence bracket
            r['final'].get('auroc', {}).pop('bracket', None)
        runs.setdefault(r['run'], []).append(r)
    return runs


def headline(dataset: str) -> str:
    return 'dice' if dataset == 'isic' else 'mean_iou'


def _point(run: dict[str, Any], step: int | None) -> dict[str, Any] | None:
    """The final point of a run, or its curve point at *step*."""
    if step is None:
        return run['final']
    return next((p for p in run['curve'] if p['step'] == step), None)


def _mean_sd(values: Sequence[float]) -> str:
    v = np.asarray(values, dtype=float)
    sd = v.std(ddof=1) if len(v) > 1 else 0.0
    return f'{v.mean():.3f} ± {sd:.3f}'


def summary(folders: Sequence[Path], step: int | None = None) -> list[str]:
    """A markdown table: mean ± sd over seeds of every run of the folders.

    Args:
        folders: Result folders (one dataset each).
        step: Score the curve point at this many updates instead of the end.

    Returns:
        The table's lines.
    """
    lines = [
        '| results | run | seeds | updates | held-out score | pixel acc. | '
        'AUROC entropy | AUROC bracket | heads I / U / D | s / update |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ]
    for folder in folders:
        for name, rs in load_runs(folder).items():
            points = [p for p in (_point(r, step) for r in rs) if p is not None]
            if not points:
                continue
            dataset = rs[0]['dataset']
            key = headline(dataset)
            score = f'{"Dice" if key == "dice" else "mIoU"} {_mean_sd([p[key] for p in points])}'
            aurocs = []
            for sig in ('entropy', 'bracket'):
                v = [p['auroc'][sig] for p in points if sig in p.get('auroc', {})]
                aurocs.append(_mean_sd(v) if v else '-')
            heads = ['IoU_intersection', 'IoU_union', 'IoU_difference']
            fit = (
                ' / '.join(f'{np.mean([p[h] for p in points]):.2f}' for h in heads)
                if heads[0] in points[0]
                else '-'
            )
            secs = np.mean([p['train_seconds'] / p['step'] for p in points])
            lines.append(
                f'| {folder.name} | {name} | {len(points)} | {points[0]["step"]} | {score} '
                f'| {_mean_sd([p["pixel_accuracy"] for p in points])} '
                f'| {aurocs[0]} | {aurocs[1]} | {fit} | {secs:.2f} |'
            )
    return lines


def plot(folders: Sequence[Path], out: Path) -> None:
    import matplotlib

    matplotlib.use('agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(folders), 3, figsize=(15, 4 * len(folders)), squeeze=False
    )
    for row, folder in zip(axes, folders, strict=True):
        runs = load_runs(folder)
        for name, rs in runs.items():
            key = headline(rs[0]['dataset'])
            steps = np.array([p['step'] for p in rs[0]['curve']])
            n = min(len(r['curve']) for r in rs)
            vals = np.array([[p[key] for p in r['curve'][:n]] for r in rs])
            wall = np.array([[p['train_seconds'] for p in r['curve'][:n]] for r in rs])
            mean, sd = vals.mean(0), vals.std(0)
            (line,) = row[0].plot(steps[:n], mean, label=f'{name} (n={len(rs)})')
            row[0].fill_between(
                steps[:n], mean - sd, mean + sd, alpha=0.2, color=line.get_color()
            )
            row[1].plot(wall.mean(0) / 60, mean, color=line.get_color(), label=name)
            row[1].fill_between(
                wall.mean(0) / 60,
                mean - sd,
                mean + sd,
                alpha=0.2,
                color=line.get_color(),
            )
            rel = [r['final']['reliability'] for r in rs]
            conf = np.nanmean(
                [
                    np.where(np.array(x['count']) > 0, x['confidence'], np.nan)
                    for x in rel
                ],
                0,
            )
            acc = np.nanmean(
                [
                    np.where(np.array(x['count']) > 0, x['accuracy'], np.nan)
                    for x in rel
                ],
                0,
            )
            row[2].plot(conf, acc, 'o-', color=line.get_color(), label=name)
        dataset = next(iter(runs.values()))[0]['dataset']
        label = 'lesion Dice' if dataset == 'isic' else 'mean IoU'
        row[0].set(
            xlabel='gradient updates',
            ylabel=f'held-out {label}',
            title=f'{dataset}: {label} vs updates',
        )
        row[1].set(
            xlabel='training wall time (min, CPU)',
            ylabel=f'held-out {label}',
            title=f'{dataset}: {label} vs wall time',
        )
        row[2].plot([0, 1], [0, 1], 'k:', lw=1)
        row[2].set(
            xlabel='top-class probability',
            ylabel='accuracy',
            title=f'{dataset}: calibration (final)',
        )
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f'wrote {out}')


# ---------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='dataset', required=True)
    for dataset, root, size in (
        ('dubai', 'data/dubai_aerial/data', 64),
        ('isic', '../shared/realdata/isic2017_256', 64),
    ):
        p = sub.add_parser(dataset)
        p.add_argument('--root', default=root)
        p.add_argument('--out', required=True)
        p.add_argument('--models', nargs='*', default=list(MODELS), choices=MODELS)
        p.add_argument(
            '--ssg2-variant',
            action='append',
            default=[],
            help='extra SSG2 run NAME:empty=official|smoothed,fuzzy=official|one|drop,'
            'fuzzy_weight=W',
        )
        p.add_argument('--seeds', nargs='+', type=int, default=[0])
        p.add_argument('--steps', type=int, default=1500)
        p.add_argument(
            '--stop-after',
            type=int,
            help='stop after this many updates of a --steps-long schedule (same data '
            'order as the full run: for short ablations comparable with its curve)',
        )
        p.add_argument('--eval-every', type=int, default=250)
        p.add_argument(
            '--eval-items', type=int, default=96 if dataset == 'dubai' else 200
        )
        p.add_argument('--preset', default='tiny')
        p.add_argument('--size', type=int, default=size)
        p.add_argument('--batch-size', type=int, default=4)
        p.add_argument('--sequence-length', type=int, default=2)
        p.add_argument('--threads', type=int, default=1)
        p.add_argument(
            '--precision',
            default='32-true',
            help="Lightning Trainer precision, e.g. '32-true' or 'bf16-mixed'",
        )
        if dataset == 'isic':
            p.add_argument('--train-images', type=int, default=1500)
        else:
            p.add_argument(
                '--support-strategy',
                default='random',
                choices=('random', 'same_source'),
                help='where training supports come from (the paper: random)',
            )
    p = sub.add_parser('plot')
    p.add_argument('folders', nargs='+', type=Path)
    p.add_argument('--figure', type=Path, default=Path('docs/figures/curves.png'))
    p.add_argument(
        '--at-step', type=int, help='tabulate the curve point at this many updates'
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.dataset == 'plot':
        print('\n'.join(summary(args.folders, args.at_step)))
        plot(args.folders, args.figure)
        return
    variants = [parse_variant(v) for v in args.ssg2_variant]
    for seed in args.seeds:
        for model in args.models:
            run_one(args, model, seed, None)
        for variant in variants:
            run_one(args, 'ssg2', seed, variant)


if __name__ == '__main__':
    main()
