"""Benchmark: RasterEpisodeDataModule episode reads and its one-off statistics pass.

Generates a multi-file GeoTIFF set (``--files`` x ``--files`` tiles of 4-band uint8
images and uint8 masks, tiled 256, ``--size`` pixels square in all) into a
temporary directory, builds a :class:`~torchgeo_ssg2.datamodules.RasterEpisodeDataModule`
over the two folders (block split, ``near`` supports) and measures in the same
run:

* ``episode_cost_over_single_window``: seconds per training episode (target + T
  supports through the datamodule's sampler, policy and reader) over seconds per
  single window of torchgeo's ``RandomPatchSampler`` on the same training
  dataset; an episode reads T + 1 windows, so the aim is at most T + 1. Timed
  passes of the two loaders alternate after one warm-up pass each, and the ratio
  is the median over rounds (``cpu_time_ratio``: the same with this process's
  CPU time, less sensitive to other load on the machine);
* ``statistics_s_per_gigapixel``: seconds of the streamed mean/std pass
  (``raster_statistics`` over the datamodule's seeded training windows) per
  gigapixel read;
* ``checks_s``: the input checks of construction (band counts, overlap, every
  mask value read block by block), with the statistics given.

Usage: ``python benchmarks/bench_rasters.py [--size 8192] [--files 2] [-T 4]``.
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
from bench_sampler import timed_pass
from rasterio.transform import from_origin
from rasterio.windows import Window
from torch.utils.data import DataLoader
from torchgeo.datasets import stack_samples
from torchgeo.samplers import RandomPatchSampler

from torchgeo_ssg2.datamodules import RasterEpisodeDataModule
from torchgeo_ssg2.datasets.rasters import raster_statistics
from torchgeo_ssg2.episodes import GeoEpisodeSampler

RES = 0.5


def generate(root: Path, size: int, files: int, block: int = 512) -> None:
    """Write files x files image/mask tiles that together cover size x size."""
    (root / 'images').mkdir()
    (root / 'masks').mkdir()
    tile = size // files
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 64, (4, block, block), dtype=np.uint8)
    for i in range(files):
        for j in range(files):
            common = {
                'driver': 'GTiff',
                'height': tile,
                'width': tile,
                'crs': 'EPSG:32640',
                'transform': from_origin(
                    300000.0 + j * tile * RES, 2800000.0 - i * tile * RES, RES, RES
                ),
                'tiled': True,
                'blockxsize': 256,
                'blockysize': 256,
                'dtype': 'uint8',
            }
            name = f'tile_{i}_{j}.tif'
            with (
                rasterio.open(root / 'images' / name, 'w', count=4, **common) as img,
                rasterio.open(root / 'masks' / name, 'w', count=1, **common) as msk,
            ):
                for r in range(0, tile, block):
                    for c in range(0, tile, block):
                        h, w = min(block, tile - r), min(block, tile - c)
                        rows, cols = np.mgrid[r : r + h, c : c + w]
                        classes = ((rows // 97 + cols // 131) % 6).astype(np.uint8)
                        image = noise[:, :h, :w] + (classes * 30)[None]
                        img.write(image, window=Window(c, r, w, h))
                        msk.write(classes[None], window=Window(c, r, w, h))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=8192, help='pixels per side')
    parser.add_argument('--files', type=int, default=2, help='tiles per side')
    parser.add_argument('--window', type=int, default=256)
    parser.add_argument('-T', '--sequence-length', type=int, default=4)
    parser.add_argument('--episodes', type=int, default=64, help='per timed pass')
    parser.add_argument('--rounds', type=int, default=5, help='timed passes')
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--statistics-windows', type=int, default=256)
    parser.add_argument('--out', type=Path, default=None, help='also write JSON here')
    args = parser.parse_args()
    torch.set_num_threads(1)
    t = args.sequence_length

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        generate(root, args.size, args.files)
        generate_s = time.perf_counter() - start

        start = time.perf_counter()
        dm = RasterEpisodeDataModule(
            str(root / 'images'),
            str(root / 'masks'),
            num_classes=6,
            patch_size=args.window,
            batch_size=args.batch_size,
            sequence_length=t,
            length=args.episodes,
            mean=[100.0] * 4,
            std=[40.0] * 4,
        )
        checks_s = time.perf_counter() - start

        windows = GeoEpisodeSampler(
            dm.split_dataset('train'),
            size=args.window,
            length=args.statistics_windows,
            seed=0,
        ).target_windows(0)
        start = time.perf_counter()
        raster_statistics(dm.images, windows, dm.nodata, progress=False)
        statistics_s = time.perf_counter() - start
        gigapixels = len(windows) * args.window**2 / 1e9

        dm.setup('fit')
        ep_loader = dm.train_dataloader()
        single = RandomPatchSampler(
            dm.split_dataset('train'),
            size=args.window,
            length=args.episodes * (t + 1),
            generator=0,
        )
        win_loader = DataLoader(
            dm.split_dataset('train'),
            sampler=single,
            batch_size=args.batch_size * (t + 1),
            collate_fn=stack_samples,
        )
        timed_pass(ep_loader)
        timed_pass(win_loader)
        ratios, cpu_ratios = [], []
        n_ep = s_ep = n_win = s_win = 0.0
        for r in range(args.rounds):
            dm.train_sampler.set_epoch(r + 1)  # type: ignore[union-attr]
            ne, se, ce = timed_pass(ep_loader)
            nw, sw, cw = timed_pass(win_loader)
            ratios.append((se / ne) / (sw / nw))
            cpu_ratios.append((ce / ne) / (cw / nw))
            n_ep, s_ep, n_win, s_win = n_ep + ne, s_ep + se, n_win + nw, s_win + sw

    report = {
        'benchmark': 'bench_rasters',
        'rasters': (
            f'{args.files}x{args.files} files covering {args.size}x{args.size}, '
            '4-band uint8 images + uint8 masks, tiled 256'
        ),
        'window': args.window,
        'sequence_length': t,
        'episodes_per_pass': args.episodes,
        'timed_passes': args.rounds,
        'episodes_per_s': round(n_ep / s_ep, 2),
        'single_windows_per_s': round(n_win / s_win, 2),
        'episode_cost_over_single_window': round(float(np.median(ratios)), 3),
        'per_round_ratios': [round(x, 3) for x in ratios],
        # All reads happen in this process: its CPU time is the cost, and is less
        # sensitive to other load on the machine than wall time.
        'cpu_time_ratio': round(float(np.median(cpu_ratios)), 3),
        'aim_at_most': t + 1,
        'statistics_windows': len(windows),
        'statistics_s': round(statistics_s, 2),
        'statistics_s_per_gigapixel': round(statistics_s / gigapixels, 1),
        'checks_s': round(checks_s, 2),
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
