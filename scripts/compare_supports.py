#!/usr/bin/env python3
"""SSG2 with 'random' against 'same_source' supports on the Dubai demo data (CPU).

Issue 5, item 6. The Dubai images are not georeferenced, so 'same_source'
(supports drawn from the target's own tile) stands in for the geo-aware 'near'
strategy. Two SSG2 models are trained with the same preset, seed (hence the same
initial weights, patch positions and shuffling), data pipeline (patch size,
augmentation, batch size, T) and number of gradient updates as
``scripts/compare_dubai.py``; they differ only in the support strategy used in
training. Every model is then scored on the same evenly spread held-out
(test-split) windows with fixed supports drawn from the test split, once with the
strategy it was trained with (the headline protocol) and once with the other
strategy (the cross rows). Unlike ``compare_dubai.py``, the training epoch is
not cut to ``steps * batch`` patches: the patch table of ``RandomPatchDataset``
lists the images in order, so such a short epoch holds patches of the first few
images of tile 1 only, where 'random' and 'same_source' draw the same supports.
Here an epoch covers every training image (7630 64-px patches) and training
stops after ``--steps`` updates. In the test split every tile holds one image, so
'same_source' test supports come from the target's own image, 'random' ones from
any of the six held-out images. Prints a markdown table and writes JSON.

    .venv/bin/python scripts/compare_supports.py --steps 200 \
        --json outputs/compare_supports.json
"""

import argparse
import json
import os
import time
from typing import Any

import torch
from compare_dubai import HeldOutDubai, add_common_arguments, make_task, make_trainer
from lightning.pytorch import seed_everything

STRATEGIES = ('random', 'same_source')


def datamodule(strategy: str, args: argparse.Namespace) -> HeldOutDubai:
    """Build the Dubai data module of one support strategy.

    Args:
        strategy: 'random' or 'same_source'.
        args: Parsed command-line arguments.

    Returns:
        The data module, testing on ``args.eval_windows`` evenly spread windows.
    """
    dm = HeldOutDubai(
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        sequence_length=args.sequence_length,
        support_strategy=strategy,  # type: ignore[arg-type]
        length=None,
        seed=args.seed,
        root=args.root,
    )
    dm.eval_windows = args.eval_windows
    return dm


def train_and_score(strategy: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train SSG2 with one support strategy and score it with both.

    Args:
        strategy: Support strategy used in training.
        args: Parsed command-line arguments.

    Returns:
        One row per evaluation strategy, the training strategy's first.
    """
    seed_everything(args.seed, workers=True)
    task = make_task('SSG2', args)
    trainer = make_trainer(args.steps)
    t0 = time.perf_counter()
    trainer.fit(task, datamodule(strategy, args))
    train_seconds = time.perf_counter() - t0
    print(f'trained with {strategy!r}: {train_seconds:.0f} s', flush=True)

    rows = []
    others = [s for s in STRATEGIES if s != strategy]
    for eval_strategy in [strategy, *others]:
        dm = datamodule(eval_strategy, args)
        t0 = time.perf_counter()
        (metrics,) = trainer.test(task, dm, verbose=False)
        rows.append(
            {
                'train_supports': strategy,
                'eval_supports': eval_strategy,
                'steps': int(trainer.global_step),
                'mean_iou': float(metrics['test_AverageJaccardIndex']),
                'mean_f1': float(metrics['test_AverageF1Score']),
                'overall_accuracy': float(metrics['test_OverallAccuracy']),
                'train_seconds': train_seconds,
                'test_seconds': time.perf_counter() - t0,
                'windows': len(dm.test_dataset),
            }
        )
    return rows


def main() -> None:
    """Run the comparison, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument(
        '--json',
        default='outputs/compare_supports.json',
        help='write the rows to this JSON file',
    )
    args = parser.parse_args()
    if not os.path.isdir(args.root):
        parser.error(f'--root {args.root!r} is not a directory')
    torch.set_num_threads(args.threads)

    rows = [row for s in STRATEGIES for row in train_and_score(s, args)]
    print(
        f'\nDubai demo data, SSG2 {args.preset} preset, seed {args.seed}, '
        f'{args.steps} gradient updates of batch {args.batch_size} '
        f'({args.patch_size}-px patches, T={args.sequence_length}), CPU, '
        f'{args.threads} thread(s); scored on {rows[0]["windows"]} held-out test '
        'windows with fixed test-split supports. Rows marked * use the training '
        'strategy at test time (the headline protocol).\n'
    )
    print(
        '| train supports | test supports | updates | mean IoU | mean F1 '
        '| overall acc. | train wall time (s) |'
    )
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        star = ' *' if r['eval_supports'] == r['train_supports'] else ''
        print(
            f'| {r["train_supports"]} | {r["eval_supports"]}{star} | {r["steps"]} '
            f'| {r["mean_iou"]:.3f} | {r["mean_f1"]:.3f} '
            f'| {r["overall_accuracy"]:.3f} | {r["train_seconds"]:.0f} |'
        )
    if args.json:
        os.makedirs(os.path.dirname(args.json) or '.', exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump({'args': vars(args), 'rows': rows}, f, indent=2)


if __name__ == '__main__':
    main()
