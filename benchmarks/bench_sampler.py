"""Benchmark: SSG2 episodes per second against single-window reads.

Generates a tiled 8192 x 8192 GeoTIFF pair (3-band uint8 image, 1-band uint8 mask,
projected CRS) into a temporary directory, then measures with 0 and 2 DataLoader
workers:

* episodes/s: ``GeoEpisodeSampler`` targets, ``GeoSupportPolicy`` (T supports per
  target) and ``EpisodeDataset``;
* windows/s: single-window reads through torchgeo's ``RandomPatchSampler`` on the
  same ``images & masks`` dataset, in the same run;
* index/s: the target sampler and support policy alone (no reads), to show the
  index logic is cheap.

After one warm-up pass each, timed passes of the two loaders alternate, so that
load changes on a shared machine affect both alike. A batch of B episodes and a
batch of B * (T + 1) single windows read the same number of windows, so both
loaders have the same number of batches per pass (and the same worker pipeline).

An episode reads T + 1 windows, so ``episode_cost_over_single_window`` (seconds
per episode / seconds per single window) should be at most T + 1.

Usage: ``python benchmarks/bench_sampler.py [--size 8192] [--window 256] [-T 4]``.
Prints one JSON object.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window
from torch.utils.data import DataLoader
from torchgeo.datasets import RasterDataset
from torchgeo.samplers import RandomPatchSampler

from torchgeo_ssg2.episodes import (
    EpisodeDataset,
    GeoEpisodeSampler,
    GeoSupportPolicy,
    ItemReader,
)


class BenchImages(RasterDataset):
    filename_glob = 'image.tif'
    is_image = True


class BenchMasks(RasterDataset):
    filename_glob = 'mask.tif'
    is_image = False


def generate(root: Path, size: int, block: int = 512) -> None:
    """Write image.tif (3 x size x size) and mask.tif (size x size), tiled 256."""
    common = {
        'driver': 'GTiff',
        'height': size,
        'width': size,
        'crs': 'EPSG:32640',
        'transform': from_origin(300000.0, 2800000.0, 0.5, 0.5),
        'tiled': True,
        'blockxsize': 256,
        'blockysize': 256,
        'dtype': 'uint8',
    }
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 64, (3, block, block), dtype=np.uint8)
    with (
        rasterio.open(root / 'image.tif', 'w', count=3, **common) as img,
        rasterio.open(root / 'mask.tif', 'w', count=1, **common) as msk,
    ):
        for r in range(0, size, block):
            for c in range(0, size, block):
                h, w = min(block, size - r), min(block, size - c)
                rows, cols = np.mgrid[r : r + h, c : c + w]
                classes = ((rows // 97 + cols // 131) % 6).astype(np.uint8)
                image = noise[:, :h, :w] + (classes * 30)[None]
                img.write(image, window=Window(c, r, w, h))
                msk.write(classes[None], window=Window(c, r, w, h))


def timed_pass(loader: DataLoader) -> tuple[int, float, float]:
    """Items, wall-clock seconds and main-process CPU seconds of one pass."""
    wall, cpu = time.perf_counter(), time.process_time()
    items = sum(len(batch['image']) for batch in loader)
    return items, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=8192, help='raster side (px)')
    parser.add_argument('--window', type=int, default=256, help='window side (px)')
    parser.add_argument('-T', '--sequence-length', type=int, default=4)
    parser.add_argument('--strategy', default='random')
    parser.add_argument('--episodes', type=int, default=24, help='per pass')
    parser.add_argument(
        '--windows', type=int, default=None, help='per pass (default episodes*(T+1))'
    )
    parser.add_argument('--rounds', type=int, default=5, help='timed passes')
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 2])
    parser.add_argument('--out', type=Path, default=None, help='also write JSON here')
    args = parser.parse_args()
    torch.set_num_threads(1)
    t = args.sequence_length
    if args.windows is None:
        args.windows = args.episodes * (t + 1)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        generate(root, args.size)
        generate_s = time.perf_counter() - start
        dataset = BenchImages(paths=root) & BenchMasks(paths=root)

        sampler = GeoEpisodeSampler(
            dataset, size=args.window, length=args.episodes, seed=0
        )
        policy = GeoSupportPolicy(
            dataset,
            size=args.window,
            sequence_length=t,
            strategy=args.strategy,
            seed=0,
        )
        index_sampler = GeoEpisodeSampler(dataset, size=args.window, length=200, seed=1)
        start = time.perf_counter()
        n_index = sum(1 for i in index_sampler if policy.draw(i.target, i.epoch))
        index_rate = n_index / (time.perf_counter() - start)

        episodes = EpisodeDataset(ItemReader(dataset), policy)
        single = RandomPatchSampler(
            dataset, size=args.window, length=args.windows, generator=0
        )
        results = {}
        for workers in args.workers:
            common = {
                'num_workers': workers,
                'persistent_workers': workers > 0,
            }
            ep_loader = DataLoader(
                episodes, sampler=sampler, batch_size=args.batch_size, **common
            )
            # Same reads per batch: B episodes read B * (T + 1) windows.
            win_loader = DataLoader(
                dataset, sampler=single, batch_size=args.batch_size * (t + 1), **common
            )
            # Warm-up pass of each (worker start, file handles, page cache).
            timed_pass(ep_loader)
            timed_pass(win_loader)
            # Alternate the two so that load changes on a shared machine hit both;
            # the ratio is the median over rounds of (s/episode) / (s/window).
            ratios, cpu_ratios = [], []
            n_ep = s_ep = n_win = s_win = 0.0
            for r in range(args.rounds):
                sampler.set_epoch(r + 1)
                ne, se, ce = timed_pass(ep_loader)
                nw, sw, cw = timed_pass(win_loader)
                ratios.append((se / ne) / (sw / nw))
                cpu_ratios.append((ce / ne) / (cw / nw))
                n_ep, s_ep, n_win, s_win = n_ep + ne, s_ep + se, n_win + nw, s_win + sw
            entry = {
                'episodes_per_s': round(n_ep / s_ep, 2),
                'single_windows_per_s': round(n_win / s_win, 2),
                'episode_cost_over_single_window': round(float(np.median(ratios)), 3),
                'per_round_ratios': [round(x, 3) for x in ratios],
            }
            if workers == 0:
                # All reads happen in this process: its CPU time is the cost, and
                # is less sensitive to other load on the machine than wall time.
                entry['cpu_time_ratio'] = round(float(np.median(cpu_ratios)), 3)
            results[f'workers_{workers}'] = entry
            del ep_loader, win_loader

    base = results[f'workers_{args.workers[0]}']
    report = {
        'benchmark': 'bench_sampler',
        'raster': f'{args.size}x{args.size}, 3-band uint8 image + uint8 mask, tiled 256',
        'window': args.window,
        'sequence_length': t,
        'strategy': args.strategy,
        'episodes_per_pass': args.episodes,
        'single_windows_per_pass': args.windows,
        'timed_passes': args.rounds,
        'batch_size_episodes': args.batch_size,
        'batch_size_single_windows': args.batch_size * (t + 1),
        'index_only_episodes_per_s': round(index_rate, 1),
        'episode_cost_over_single_window': base['episode_cost_over_single_window'],
        'aim_at_most': t + 1,
        'results': results,
        'generate_s': round(generate_s, 1),
        'cpu_count': os.cpu_count(),
        'python': platform.python_version(),
        'torch': torch.__version__,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + '\n')


if __name__ == '__main__':
    main()
