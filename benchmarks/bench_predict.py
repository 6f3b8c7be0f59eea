"""Benchmark large-raster prediction: flat memory and pipeline overhead.

Generates square 3-band uint8 GeoTIFFs (default 2048² and 8192², tiled, LZW) and
predicts each with :func:`torchgeo_ssg2.inference.predict_raster` under the same
settings, each size in its own subprocess, reporting the peak RSS (``ru_maxrss``)
of each. ``rss_ratio_8192_over_2048`` is the largest over the smallest size.

Throughput: in one more subprocess, the whole pipeline (read, normalise, model,
blend, write) on the smallest raster is timed against the model's forward pass
alone over the same windows, read beforehand into memory and batched the same way,
after one warm-up run of each, the two run back to back ``--repeats`` times:
``pipeline_over_forward_throughput``
is the median of the paired ratios (``pipeline_over_forward_best_of_each`` the
ratio of the best of each series).
That subprocess runs with glibc's ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``
raised, so that both timed conditions see the same allocator behaviour. The
measurement is repeated with the default allocator settings
(``throughput_default_malloc``; ``default_malloc_pipeline_slowdown`` is its
pipeline time over the tuned one).

Models (``--model``):

* ``cnn`` (default): a small fully convolutional network (3x3 conv 3->32, ReLU,
  3x3 conv 32->32, ReLU, 1x1 conv ->6, softmax), cheap enough that the 8192² raster
  (1849 windows of 256²) runs in a few minutes on two CPU cores, yet with a
  per-window cost of the order of a real small segmenter, so the ratio measures
  the pipeline's overhead honestly;
* ``pixel``: a 1x1 convolution (the ratio is then dominated by I/O);
* ``ptavit-test`` / ``ssg2-test``: the package's models at the ``test`` preset
  (SSG2 with T supports read from the raster itself); slow on CPU.

``--extra-throughput MODEL:SIZE ...`` repeats the throughput measurement for other
models and sizes (e.g. ``ptavit-test:512``, the package's PTAViT at its test preset),
reported under ``extra_throughput``.

``--many``: instead, 8 generated rasters (``--many-size``, default 2048²; at
768² the start of the processes, about 5 s of imports each, dominates) are
predicted into a folder by ``torchgeo-ssg2 predict --output-dir`` with a PTAViT
checkpoint (test preset), once by 1 process and once by 2 processes (DDP on the
CPU, started by ``torchrun``; one thread each), on the same files in one run,
alternating ``--repeats`` times (best of each): ``speedup_2proc_over_1proc``. The
outputs of both are checked to be byte-identical. Before and after, a fixed
one-thread convolution is timed pinned to each core, one core at a time
(``core_seconds_before`` / ``_after``) and on both at once
(``core_seconds_together_before`` / ``_after``): ranks get equal shares of the
work, so with unequal cores the speed-up is at most ``even_split_speedup_bound``
(cores x fastest / slowest alone), and where busy cores slow each other down
(a virtual machine's cores share the host) any split reaches at most
``all_cores_busy_speedup_bound`` (the summed rate of the cores busy together over
the fastest alone); each is the smaller of the two probes. From the progress lines of the best run of
each, ``rank_busy_seconds_*`` are the seconds each rank spent predicting its parts,
``other_seconds_*`` the rest of the run (start-up, checks, rendezvous, strip
merging, exit), and ``busy_seconds_2proc_over_1proc`` how many more rank-seconds
the same work took on two processes. ``one_raster_in_strips`` does
the same for one raster of twice the side, which the 2 processes share as strips
of window rows (``--shard auto``).

``--per-megapixel``: seconds per megapixel of :func:`predict_raster` (window 256,
overlap 64, batch 1, one thread) for PTAViT and for SSG2 at T = 1, 2, 4, at the
``--preset`` (default ``small``) on a ``--mp-size``² raster, to plan large runs.

Usage: ``python benchmarks/bench_predict.py [--sizes 2048 8192] [--json out.json]``,
``python benchmarks/bench_predict.py --many``,
``python benchmarks/bench_predict.py --per-megapixel``.
"""

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window
from torch import Tensor, nn


class BenchCNN(nn.Module):
    """Small fully convolutional segmenter (6 classes)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 6) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, num_classes, 1),
        )

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image).softmax(dim=1)


class PackageModel(nn.Module):
    """SSG2 / PTAViT at a preset, returning torchgeo's predict dict."""

    def __init__(
        self,
        kind: str,
        in_channels: int = 3,
        num_classes: int = 6,
        sequence_length: int = 2,
    ) -> None:
        super().__init__()
        from torchgeo_ssg2.models import SSG2, PTAViT

        self.in_channels = in_channels
        self.needs_supports = kind.startswith('ssg2')
        self.sequence_length = sequence_length
        cls = SSG2 if self.needs_supports else PTAViT
        self.model = cls(in_channels, num_classes, preset=kind.split('-', 1)[1])
        self.num_classes = num_classes

    def forward(self, image: Tensor, support_image: Tensor | None = None) -> Tensor:
        if self.needs_supports:
            out = self.model.forward_inference(image, support_image)['target']
            k = self.num_classes + 1
            return out[:, : self.num_classes] / out[:, :k].sum(
                1, keepdim=True
            ).clamp_min(1e-6)
        return self.model(image)[:, : self.num_classes].softmax(dim=1)


def build_model(kind: str, sequence_length: int = 2) -> nn.Module:
    torch.manual_seed(0)
    if kind == 'cnn':
        model: nn.Module = BenchCNN()
    elif kind == 'pixel':
        model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.Softmax(dim=1))
        model.in_channels = 3  # type: ignore[assignment]
    else:
        model = PackageModel(kind, sequence_length=sequence_length)
    return model.eval()


def make_raster(path: Path, size: int) -> None:
    """Write a size² 3-band uint8 raster strip by strip (flat memory)."""
    profile = {
        'driver': 'GTiff',
        'width': size,
        'height': size,
        'count': 3,
        'dtype': 'uint8',
        'crs': 'EPSG:32640',
        'transform': from_origin(500000.0, 2780000.0, 0.5, 0.5),
        'tiled': True,
        'blockxsize': 256,
        'blockysize': 256,
        'compress': 'lzw',
    }
    rng = np.random.default_rng(size)
    cols = np.arange(size)
    with rasterio.open(path, 'w', **profile) as dst:
        for r in range(0, size, 256):
            rows = np.arange(r, min(r + 256, size))[:, None]
            base = 127 + 80 * np.sin(rows / 97.0) * np.cos(cols / 131.0)
            noise = rng.integers(-20, 20, size=(3, len(rows), size))
            data = np.clip(base[None] + noise, 0, 255).astype(np.uint8)
            dst.write(data, window=Window(0, r, size, len(rows)))


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_predict(args: argparse.Namespace) -> dict[str, Any]:
    import torchgeo_ssg2.inference  # noqa: F401  (imports count in the baseline)
    from torchgeo_ssg2.inference import predict_raster

    model = build_model(args.model)
    baseline = peak_rss_mb()
    out = Path(args.workdir) / f'pred_{args.size}.tif'
    start = time.perf_counter()
    predict_raster(
        model,
        Path(args.workdir) / f'in_{args.size}.tif',
        out,
        window=args.window,
        overlap=args.overlap,
        batch_size=args.batch_size,
        overwrite=True,
        mean=[127.0] * 3,
        std=[60.0] * 3,
        progress=False,
    )
    seconds = time.perf_counter() - start
    from torchgeo_ssg2.inference import WindowGrid

    windows = len(WindowGrid(args.size, args.size, args.window, args.overlap))
    with rasterio.open(out) as dst:
        assert (dst.width, dst.height) == (args.size, args.size)
    return {
        'size': args.size,
        'windows': windows,
        'seconds': seconds,
        'windows_per_s': windows / seconds,
        'baseline_rss_mb': baseline,
        'peak_rss_mb': peak_rss_mb(),
        'peak_above_baseline_mb': peak_rss_mb() - baseline,
    }


def child_throughput(args: argparse.Namespace) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    from torchgeo_ssg2.inference import RasterWindowDataset, predict_raster
    from torchgeo_ssg2.inference.model import predict_batch

    model = build_model(args.model)
    path = Path(args.workdir) / f'in_{args.size}.tif'
    supports = 'raster' if getattr(model, 'needs_supports', False) else 'none'
    dataset = RasterWindowDataset(
        path,
        window=args.window,
        overlap=args.overlap,
        mean=[127.0] * 3,
        std=[60.0] * 3,
        supports=supports,
        sequence_length=getattr(model, 'sequence_length', None),
    )
    # The same batches as the pipeline, read into memory beforehand.
    batches = list(DataLoader(dataset, batch_size=args.batch_size, shuffle=False))
    dataset.close()
    windows = len(dataset)

    def forward_only() -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            for i, batch in enumerate(batches):
                predict_batch(model, batch, i)
        return time.perf_counter() - start, time.process_time() - cpu

    def pipeline() -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        predict_raster(
            model,
            path,
            Path(args.workdir) / 'throughput.tif',
            window=args.window,
            overlap=args.overlap,
            batch_size=args.batch_size,
            overwrite=True,
            mean=[127.0] * 3,
            std=[60.0] * 3,
            progress=False,
        )
        return time.perf_counter() - start, time.process_time() - cpu

    # warm-ups: the first pipeline run also pays one-time costs (imports, GDAL's
    # drivers, the file cache) that a run of many windows pays once
    forward_only()
    pipeline()
    f_runs, p_runs = [], []
    for _ in range(args.repeats):
        f_runs.append(forward_only())
        p_runs.append(pipeline())
    per_repeat = [f[0] / p[0] for f, p in zip(f_runs, p_runs, strict=True)]
    forward_rate = windows / min(t for t, _ in f_runs)
    pipeline_rate = windows / min(t for t, _ in p_runs)
    return {
        'size': args.size,
        'windows': windows,
        'forward_seconds': [t for t, _ in f_runs],
        'pipeline_seconds': [t for t, _ in p_runs],
        'forward_cpu_seconds': [c for _, c in f_runs],
        'pipeline_cpu_seconds': [c for _, c in p_runs],
        'forward_windows_per_s': forward_rate,
        'pipeline_windows_per_s': pipeline_rate,
        # the median over the repeats of forward / pipeline run back to back: a
        # pair sees the same machine, while the best of each series may come
        # from moments when the (virtual) cores ran at different speeds
        'pipeline_over_forward_throughput': float(np.median(per_repeat)),
        'pipeline_over_forward_best_of_each': pipeline_rate / forward_rate,
        'ratio_per_repeat': per_repeat,
        # the same from CPU time (all threads): the pipeline's extra work, less
        # sensitive to other processes on a shared machine than wall time
        'pipeline_over_forward_cpu_efficiency': min(c for _, c in f_runs)
        / min(c for _, c in p_runs),
    }


def child_per_megapixel(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per megapixel of predict_raster for one model and T."""
    from torchgeo_ssg2.inference import predict_raster

    model = build_model(args.model, args.sequence_length)
    path = Path(args.workdir) / f'in_{args.size}.tif'
    out = Path(args.workdir) / f'mp_{args.model}_{args.sequence_length}.tif'
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        predict_raster(
            model,
            path,
            out,
            window=args.window,
            overlap=args.overlap,
            batch_size=1,
            overwrite=True,
            mean=[127.0] * 3,
            std=[60.0] * 3,
            sequence_length=args.sequence_length,
            progress=False,
        )
        runs.append(time.perf_counter() - start)
    megapixels = args.size * args.size / 1e6
    return {
        'model': args.model,
        'sequence_length': args.sequence_length if model.needs_supports else None,
        'size': args.size,
        'seconds': runs,
        'seconds_per_megapixel': min(runs) / megapixels,
    }


def make_checkpoint(path: Path) -> None:
    """A PTAViTTask checkpoint (test preset, 3 bands, 6 classes) with statistics."""
    import lightning

    from torchgeo_ssg2.normalization import Normalization
    from torchgeo_ssg2.trainers import PTAViTTask

    torch.manual_seed(0)
    task = PTAViTTask(preset='test', in_channels=3, num_classes=6)
    task.set_normalization(Normalization(mean=(127.0,) * 3, std=(60.0,) * 3))
    ckpt: dict[str, Any] = {
        'state_dict': task.state_dict(),
        'hyper_parameters': dict(task.hparams),
        'pytorch-lightning_version': lightning.__version__,
    }
    task.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)


CORE_PROBE = """
import os, sys, time, torch
os.sched_setaffinity(0, {int(sys.argv[1])})
torch.set_num_threads(1)
conv = torch.nn.Conv2d(32, 32, 3, padding=1)
x = torch.randn(1, 32, 256, 256)
def work():
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(40):
            conv(x)
    return time.perf_counter() - start
work()
print(min(work() for _ in range(3)))
"""


def core_seconds(together: bool = False) -> dict[str, float]:
    """Seconds of a fixed one-thread convolution workload pinned to each core.

    On a shared (virtual) machine the cores need not be equally fast, and a
    core may slow down while the other one is busy too; a 2-process run that
    splits the work evenly then ends with the slower core.

    Args:
        together: Run the probes on all cores at once instead of one by one.

    Returns:
        Seconds by CPU number.
    """
    env = dict(os.environ, OMP_NUM_THREADS='1', OMP_WAIT_POLICY='PASSIVE')
    cpus = sorted(os.sched_getaffinity(0))

    def probe(cpu: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, '-c', CORE_PROBE, str(cpu)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    if together:
        procs = [probe(cpu) for cpu in cpus]
        return {
            str(c): float(p.communicate()[0]) for c, p in zip(cpus, procs, strict=True)
        }
    return {str(cpu): float(probe(cpu).communicate()[0]) for cpu in cpus}


def speedup_bounds(
    alone: dict[str, float], together: dict[str, float]
) -> dict[str, float]:
    """What an even split and a perfect split can reach, from the core probes.

    Args:
        alone: :func:`core_seconds` one core at a time.
        together: :func:`core_seconds` on all cores at once.

    Returns:
        ``even_split``: cores x fastest / slowest alone (the work split evenly
        ends with the slowest core); ``all_cores_busy``: the work rate of all
        cores busy at once over that of the fastest core alone (what any split
        of compute-bound work can reach when the cores slow each other down).
    """
    fastest = min(alone.values())
    return {
        'even_split': len(alone) * fastest / max(alone.values()),
        'all_cores_busy': sum(fastest / t for t in together.values()),
    }


PART_LINE = re.compile(r'^(?:rank (\d+): )?\[\d+/\d+\] .* \(([\d.]+) s\)$')


def rank_seconds(output: str) -> dict[str, float]:
    """Seconds each rank spent predicting its parts, from the progress lines.

    Args:
        output: What ``torchgeo-ssg2 predict`` printed (one line per part done:
            ``[rank R: ][k/n] ... (S s)``).

    Returns:
        Seconds by rank.
    """
    seconds: dict[str, float] = {}
    for line in output.splitlines():
        match = PART_LINE.match(line.strip())
        if match:
            rank = match.group(1) or '0'
            seconds[rank] = seconds.get(rank, 0.0) + float(match.group(2))
    return seconds


def bench_many(args: argparse.Namespace) -> dict[str, Any]:
    """1 process against 2 (torchrun, DDP on the CPU): 8 rasters, then 1 in strips."""
    work = Path(args.workdir)
    tiles = work / 'tiles'
    tiles.mkdir(exist_ok=True)
    for i in range(8):
        make_raster(tiles / f'tile_{i}.tif', args.many_size)
    big = work / 'big'
    big.mkdir(exist_ok=True)
    make_raster(big / 'big.tif', 2 * args.many_size)
    ckpt = work / 'ptavit.ckpt'
    make_checkpoint(ckpt)
    env = dict(os.environ, OMP_NUM_THREADS='1', OMP_WAIT_POLICY='PASSIVE')

    def timed(cmd: list[str]) -> tuple[float, dict[str, float]]:
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f'{" ".join(cmd[:3])} failed')
        return time.perf_counter() - start, rank_seconds(proc.stdout + proc.stderr)

    def compare(inputs: Path, name: str) -> dict[str, Any]:
        common = ['predict', '--checkpoint', str(ckpt), '--input', str(inputs)]
        common += ['--window', str(args.window), '--overlap', str(args.overlap)]
        common += ['--batch-size', str(args.batch_size), '--overwrite']
        single = [sys.executable, '-m', 'torchgeo_ssg2.cli', *common]
        single += ['--device', 'cpu', '--output-dir', str(work / f'{name}_one')]
        torchrun = Path(sys.executable).with_name('torchrun')
        double = [str(torchrun), '--standalone', '--nproc_per_node', '2']
        double += ['-m', 'torchgeo_ssg2.cli', *common, '--accelerator', 'cpu']
        double += ['--devices', '2', '--output-dir', str(work / f'{name}_two')]
        one, two = [], []
        for _ in range(args.repeats):
            one.append(timed(single))
            two.append(timed(double))
        identical = all(
            path.read_bytes() == (work / f'{name}_two' / path.name).read_bytes()
            for path in sorted((work / f'{name}_one').glob('*.tif'))
        )
        best_one = min(one, key=lambda run: run[0])
        best_two = min(two, key=lambda run: run[0])
        busy_one = sum(best_one[1].values())
        busy_two = sum(best_two[1].values())
        return {
            'seconds_1proc': [t for t, _ in one],
            'seconds_2proc': [t for t, _ in two],
            'speedup_2proc_over_1proc': best_one[0] / best_two[0],
            'outputs_byte_identical': identical,
            # where the time of the best run of each went: the ranks' seconds
            # predicting their parts (from the progress lines), and the rest
            # (start-up, checks, rendezvous, strip merging, exit)
            'rank_busy_seconds_1proc': best_one[1],
            'rank_busy_seconds_2proc': best_two[1],
            'other_seconds_1proc': best_one[0] - max(best_one[1].values()),
            'other_seconds_2proc': best_two[0] - max(best_two[1].values()),
            # the same work costs more rank-seconds when both cores are busy
            'busy_seconds_2proc_over_1proc': busy_two / busy_one,
        }

    before = core_seconds(), core_seconds(together=True)
    rasters = compare(tiles, 'tiles')
    strips = compare(big, 'big')
    after = core_seconds(), core_seconds(together=True)
    bounds = [speedup_bounds(*probes) for probes in (before, after)]
    return {
        'core_seconds_before': before[0],
        'core_seconds_after': after[0],
        'core_seconds_together_before': before[1],
        'core_seconds_together_after': after[1],
        'even_split_speedup_bound': min(b['even_split'] for b in bounds),
        'all_cores_busy_speedup_bound': min(b['all_cores_busy'] for b in bounds),
        'rasters': 8,
        'raster_size': args.many_size,
        'model': 'ptavit-test checkpoint',
        **rasters,
        'one_raster_in_strips': {'raster_size': 2 * args.many_size, **strips},
    }


def run_child(
    mode: str,
    args: argparse.Namespace,
    size: int,
    model: str | None = None,
    tuned_malloc: bool = True,
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        '--child',
        mode,
        '--size',
        str(size),
        '--workdir',
        str(args.workdir),
        '--model',
        model or args.model,
        '--window',
        str(args.window),
        '--overlap',
        str(args.overlap),
        '--batch-size',
        str(args.batch_size),
        '--threads',
        str(args.threads),
        '--repeats',
        str(args.repeats),
        '--sequence-length',
        str(getattr(args, 'sequence_length', 2)),
    ]
    env = dict(os.environ)
    if mode == 'throughput' and tuned_malloc:
        # Keep glibc from returning every large freed block to the OS: otherwise
        # each forward pass page-faults its activations afresh, and how often that
        # happens differs between the two timed conditions (pure noise here).
        from torchgeo_ssg2.allocator import ENVIRONMENT_VARIABLES, THRESHOLD

        for name in ENVIRONMENT_VARIABLES:
            env.setdefault(name, str(THRESHOLD))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f'child {mode} {size} failed')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[2048, 8192])
    parser.add_argument('--model', default='cnn')
    parser.add_argument('--window', type=int, default=256)
    parser.add_argument('--overlap', type=int, default=64)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument(
        '--extra-throughput',
        nargs='*',
        default=[],
        metavar='MODEL:SIZE',
        help='further pipeline/forward measurements (e.g. a real package model)',
    )
    parser.add_argument('--many', action='store_true', help='1 vs 2 processes')
    parser.add_argument('--many-size', type=int, default=2048)
    parser.add_argument(
        '--per-megapixel', action='store_true', help='seconds per megapixel'
    )
    parser.add_argument('--preset', default='small')
    parser.add_argument('--mp-size', type=int, default=512)
    parser.add_argument('--sequence-length', type=int, default=2)
    parser.add_argument('--workdir', default=None)
    parser.add_argument('--json', default=None, help='also write the JSON here')
    parser.add_argument(
        '--child', choices=('predict', 'throughput', 'megapixel'), default=None
    )
    parser.add_argument('--size', type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.child == 'predict':
        print(json.dumps(child_predict(args)))
        return
    if args.child == 'throughput':
        print(json.dumps(child_throughput(args)))
        return
    if args.child == 'megapixel':
        print(json.dumps(child_per_megapixel(args)))
        return
    if args.many or args.per_megapixel:
        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory(prefix='bench_predict_') as tmp:
            args.workdir = Path(args.workdir or tmp)
            args.workdir.mkdir(parents=True, exist_ok=True)
            result: dict[str, Any] = {
                'benchmark': 'bench_predict',
                'cpu_count': os.cpu_count(),
                'machine': platform.platform(),
            }
            if args.many:
                result['many'] = bench_many(args)
                result['speedup_2proc_over_1proc'] = result['many'][
                    'speedup_2proc_over_1proc'
                ]
            if args.per_megapixel:
                make_raster(args.workdir / f'in_{args.mp_size}.tif', args.mp_size)
                args.threads = 1
                rows = []
                for model, t in [('ptavit', 1), ('ssg2', 1), ('ssg2', 2), ('ssg2', 4)]:
                    args.sequence_length = t
                    rows.append(
                        run_child(
                            'megapixel', args, args.mp_size, f'{model}-{args.preset}'
                        )
                    )
                result['per_megapixel'] = rows
                result['seconds_per_megapixel'] = {
                    (
                        r['model']
                        if r['sequence_length'] is None
                        else f'{r["model"]}_T{r["sequence_length"]}'
                    ): r['seconds_per_megapixel']
                    for r in rows
                }
        text = json.dumps(result, indent=2)
        print(text)
        if args.json:
            Path(args.json).write_text(text + '\n')
        return

    with tempfile.TemporaryDirectory(prefix='bench_predict_') as tmp:
        args.workdir = Path(args.workdir or tmp)
        args.workdir.mkdir(parents=True, exist_ok=True)
        extra_specs = [spec.split(':') for spec in args.extra_throughput]
        sizes = sorted({*args.sizes, *(int(n) for _, n in extra_specs)})
        for size in sizes:
            make_raster(args.workdir / f'in_{size}.tif', size)
        runs = [run_child('predict', args, size) for size in args.sizes]
        small, large = min(args.sizes), max(args.sizes)
        throughput = run_child('throughput', args, small)
        default_malloc = run_child('throughput', args, small, tuned_malloc=False)
        extra_throughput = [
            {'model': m} | run_child('throughput', args, int(n), model=m)
            for m, n in extra_specs
        ]
    rss = {r['size']: r['peak_rss_mb'] for r in runs}
    extra = {r['size']: r['peak_above_baseline_mb'] for r in runs}
    result = {
        'benchmark': 'bench_predict',
        'model': args.model,
        'window': args.window,
        'overlap': args.overlap,
        'batch_size': args.batch_size,
        'torch_threads': args.threads,
        'cpu_count': os.cpu_count(),
        'machine': platform.platform(),
        'runs': runs,
        f'rss_ratio_{large}_over_{small}': rss[large] / rss[small],
        # the same without the process's baseline (imports, model): strip buffers,
        # GDAL cache and batches only
        f'rss_above_baseline_ratio_{large}_over_{small}': extra[large]
        / max(extra[small], 1e-6),
        'throughput': throughput,
        'pipeline_over_forward_throughput': throughput[
            'pipeline_over_forward_throughput'
        ],
        'pipeline_over_forward_cpu_efficiency': throughput[
            'pipeline_over_forward_cpu_efficiency'
        ],
        'extra_throughput': extra_throughput,
        # the same measurement with glibc's default allocator settings (what a
        # user gets): large activations are mapped and page-faulted afresh
        'throughput_default_malloc': default_malloc,
        'default_malloc_pipeline_slowdown': min(default_malloc['pipeline_seconds'])
        / min(throughput['pipeline_seconds']),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + '\n')


if __name__ == '__main__':
    main()
