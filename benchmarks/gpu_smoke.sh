#!/usr/bin/env bash
# GPU smoke test: a short `torchgeo fit` of SSG2 at bf16-mixed on the fake Dubai data,
# then a large-raster `torchgeo-ssg2 predict` with its checkpoint, both on CUDA.
# Prints one JSON object with the throughputs. Needs a CUDA device: without one it
# stops at once with exit status 2. Nothing in `make test` runs it.
#
#   bash benchmarks/gpu_smoke.sh [PYTHON] [RASTER_SIZE] [FIT_STEPS]
#
# PYTHON defaults to .venv/bin/python, RASTER_SIZE to 4096, FIT_STEPS to 30.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-.venv/bin/python}"
SIZE="${2:-4096}"
STEPS="${3:-30}"

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_smoke.sh: no CUDA device visible to torch ($PYTHON); nothing run" >&2
    exit 2
fi

WORK="$(mktemp -d -t ssg2_gpu_smoke.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

"$PYTHON" - "$WORK" "$SIZE" "$STEPS" <<'EOF'
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

work, size, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
root = Path('tests/data/dubai/data').resolve()
config = work / 'fit.yaml'
config.write_text(f"""
model:
  class_path: SSG2Task
  init_args:
    preset: small
    in_channels: 3
    num_classes: 5
    ignore_index: 255
    sequence_length: 4
data:
  class_path: DubaiAerialDataModule
  init_args:
    batch_size: 4
    patch_size: 64
    sequence_length: 4
  dict_kwargs:
    root: {root}
trainer:
  accelerator: gpu
  devices: 1
  precision: bf16-mixed
  max_steps: {steps}
  limit_val_batches: 0
  num_sanity_val_steps: 0
  logger: false
  enable_progress_bar: false
  default_root_dir: {work}
""")
cli = [sys.executable, '-m', 'torchgeo_ssg2.cli']
start = time.perf_counter()
subprocess.run([*cli, 'fit', '--config', str(config)], check=True)
fit_seconds = time.perf_counter() - start
ckpt = sorted(work.rglob('*.ckpt'))[-1]

raster = work / 'big.tif'
profile = {
    'driver': 'GTiff', 'width': size, 'height': size, 'count': 3, 'dtype': 'uint8',
    'crs': 'EPSG:32640', 'transform': from_origin(500000.0, 2780000.0, 0.5, 0.5),
    'tiled': True, 'blockxsize': 256, 'blockysize': 256, 'compress': 'lzw',
}
rng = np.random.default_rng(0)
with rasterio.open(raster, 'w', **profile) as dst:
    for r in range(0, size, 256):
        dst.write(rng.integers(0, 256, (3, 256, size), dtype=np.uint8), window=Window(0, r, size, 256))
start = time.perf_counter()
subprocess.run(
    [*cli, 'predict', '--checkpoint', str(ckpt), '--input', str(raster),
     '--output', str(work / 'pred.tif'), '--device', 'cuda', '--batch-size', '8',
     '--no-progress', '--cog'],
    check=True,
)
predict_seconds = time.perf_counter() - start
from torchgeo_ssg2.inference import WindowGrid

windows = len(WindowGrid(size, size, 256, 64))
print(json.dumps({
    'benchmark': 'gpu_smoke',
    'device': torch.cuda.get_device_name(0),
    'fit_steps': steps,
    'fit_seconds': fit_seconds,
    'fit_steps_per_s': steps / fit_seconds,
    'predict_raster_size': size,
    'predict_windows': windows,
    'predict_seconds': predict_seconds,
    'predict_windows_per_s': windows / predict_seconds,
    'predict_seconds_per_megapixel': predict_seconds / (size * size / 1e6),
    'note': 'wall times include process start, imports and (fit) data loading',
}, indent=2))
EOF
