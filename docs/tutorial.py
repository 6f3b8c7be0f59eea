"""Tutorial: SSG2 on your own rasters, from GeoTIFFs to a prediction with uncertainty.

Run it from the repository root::

    python docs/tutorial.py --out outputs/tutorial

It writes a few small georeferenced GeoTIFFs (three scenes with their masks) in
``OUT/data``, trains SSG2 on two of them for ``--steps`` updates, predicts the third
with the package's sliding-window predictor and saves three figures in ``OUT``:
``episode.png`` (a target, its supports and the model's partial views),
``prediction.png`` (image, truth, prediction, uncertainty) and
``probabilities.png`` (the probability of the foreground class and the
uncertainty of right and wrong pixels). The figures of the documentation come from
``--steps 150``; a handful of steps shows the workflow in seconds.
"""

# %% [markdown]
# ## 1. Your own rasters
#
# `RasterEpisodeDataModule` needs image rasters and one mask raster per image, in
# any CRS and resolution. Here three synthetic 3-band scenes with 0.5 m pixels in
# UTM 33N stand in for real ones: "buildings" (class 1) are red-brown rectangles on
# a green-grey "background" (class 0), with noise. Scenes `a` and `b` are the
# training data; scene `c`, in another part of the map, is the one to predict.

# %%
import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import lightning
import matplotlib

matplotlib.use('agg')
import matplotlib.pyplot as plt
import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

from torchgeo_ssg2.datamodules import RasterEpisodeDataModule
from torchgeo_ssg2.inference import predict_raster
from torchgeo_ssg2.plotting import plot_episode
from torchgeo_ssg2.trainers import SSG2Task

CRS = 'EPSG:32633'
CLASSES = ('background', 'building')
COLOURS = ((110, 140, 90), (170, 70, 50))


def write_scene(folder: Path, name: str, size: int, left: float, seed: int) -> None:
    """Write ``images/NAME.tif`` (3 bands, uint8) and ``masks/NAME.tif`` (classes).

    Args:
        folder: Data folder.
        name: Scene name.
        size: Side of the scene in pixels.
        left: Easting of the scene's left edge, metres.
        seed: Seed of the rectangles and the noise.
    """
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(size * size // 1200):
        h, w = rng.integers(6, 24, 2)
        r, c = rng.integers(0, size - 24, 2)
        mask[r : r + h, c : c + w] = 1
    colours = np.array(COLOURS, dtype=np.int16)[mask]  # H x W x 3
    noise = rng.integers(-25, 26, colours.shape)
    image = np.clip(colours + noise, 0, 255).astype(np.uint8).transpose(2, 0, 1)
    profile = {
        'driver': 'GTiff',
        'width': size,
        'height': size,
        'crs': CRS,
        'transform': from_origin(left, 5_000_000.0, 0.5, 0.5),
        'tiled': True,
        'blockxsize': 64,
        'blockysize': 64,
    }
    for sub, data in (('images', image), ('masks', mask[None])):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        with rasterio.open(
            folder / sub / f'{name}.tif',
            'w',
            count=data.shape[0],
            dtype='uint8',
            **profile,
        ) as dst:
            dst.write(data)


def make_data(folder: Path, size: int) -> Path:
    """Write scenes ``a`` and ``b`` (training) and ``c`` (to predict).

    Args:
        folder: Data folder.
        size: Side of each scene in pixels.

    Returns:
        The folder with the scene to predict.
    """
    write_scene(folder / 'train', 'a', size, 300_000.0, seed=1)
    write_scene(folder / 'train', 'b', size, 300_000.0 + size * 0.5, seed=2)
    write_scene(folder / 'new', 'c', size, 301_000.0, seed=3)
    return folder / 'new'


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the tutorial's options.

    Args:
        argv: Arguments (default: the command line).

    Returns:
        The options.
    """
    parser = argparse.ArgumentParser(
        description='SSG2 on your own rasters: train, predict, look at uncertainty.'
    )
    parser.add_argument('--out', type=Path, default=Path('outputs/tutorial'))
    parser.add_argument('--steps', type=int, default=50, help='training updates')
    parser.add_argument(
        '--preset', default='tiny', help='model preset: paper, small, tiny or test'
    )
    parser.add_argument(
        '--size',
        type=int,
        default=256,
        help='scene side in pixels; at least 256, so that a training window keeps '
        'room for supports that do not overlap it',
    )
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


# %% [markdown]
# Parse the options and write the scenes.

# %%
args = parse()
out: Path = args.out
out.mkdir(parents=True, exist_ok=True)
lightning.seed_everything(args.seed, verbose=False)
new = make_data(out / 'data', args.size)

# %% [markdown]
# ## 2. Episodes: `RasterEpisodeDataModule`
#
# The datamodule reads the folders as torchgeo `RasterDataset`s (masks with
# `is_image=False`), checks every file before training, carves a validation
# split out of the area as square blocks (of 128 px here, so that each validation
# block holds several windows to draw supports from), computes the per-band
# statistics from seeded training windows and yields SSG2 *episodes*: a target
# window and T support windows near it (`support_strategy='near'`), each with its
# mask. The same arguments go in the `data:` section of
# `experiments/ssg2_rasters.yaml`.

# %%
batch_size = 4
datamodule = RasterEpisodeDataModule(
    images=out / 'data' / 'train' / 'images',
    masks=out / 'data' / 'train' / 'masks',
    num_classes=len(CLASSES),
    class_names=CLASSES,
    patch_size=64,
    batch_size=batch_size,
    sequence_length=2,
    support_strategy='near',
    length=args.steps * batch_size,
    val_fraction=0.25,
    block_size=128,
    statistics_windows=32,
    seed=args.seed,
)

# %% [markdown]
# ## 3. A few training steps of `SSG2Task` with Lightning
#
# `SSG2Task` is a torchgeo `SemanticSegmentation` task; T comes from the
# datamodule's `sequence_length`. `model_kwargs={'spatial_size': 64}` sizes the
# attention token grids for 64-px windows. The checkpoint records the
# normalisation statistics and T, so it predicts on its own.

# %%
task = SSG2Task(
    preset=args.preset,
    in_channels=3,
    num_classes=len(CLASSES),
    labels=list(CLASSES),
    model_kwargs={'spatial_size': 64},
    optimizer='radam',
    lr=1e-3,
    eps=1e-6,
)
trainer = lightning.Trainer(
    accelerator='cpu',
    devices=1,
    max_steps=args.steps,
    limit_val_batches=2,
    num_sanity_val_steps=0,
    logger=False,
    enable_checkpointing=False,
    enable_model_summary=False,
    enable_progress_bar=False,
    default_root_dir=out,
)
trainer.fit(task, datamodule=datamodule)
checkpoint = out / 'ssg2.ckpt'
# Weights, statistics and T, without the optimiser's state: enough to predict.
trainer.save_checkpoint(checkpoint, weights_only=True)

# %% [markdown]
# ## 4. One episode and its partial views
#
# For each support t, SSG2 predicts the intersection and the union of the
# target's and the support's labels (NULL, in grey, where they do not meet);
# its 3D block aggregates these partial views into the target's mask. The
# datamodule's `aug` normalises a validation batch as training did, and
# `figure_sample` picks the first episode of the outputs for the plot.

# %%
batch = datamodule.aug(next(iter(datamodule.val_dataloader())))
task.eval()
with torch.no_grad():
    outputs = task(batch['image'], batch['support_image'])
figure = datamodule.plot(task.figure_sample(batch, outputs))
figure.savefig(out / 'episode.png', dpi=80)
plt.close(figure)

# %% [markdown]
# ## 5. Predict a raster
#
# `predict_raster` slides overlapping windows over the raster, draws each
# window's supports from the raster itself, blends the windows and writes
# GeoTIFFs with the input's CRS, transform and size: the class map and, on
# request, the class probabilities and the uncertainty. The command line does the
# same: `torchgeo-ssg2 predict --checkpoint OUT/ssg2.ckpt --input scene.tif
# --output scene_classes.tif --probabilities --uncertainty`.

# %%
scene = new / 'images' / 'c.tif'
(out / 'prediction').mkdir(exist_ok=True)
written = predict_raster(
    checkpoint,
    scene,
    out / 'prediction' / 'c_classes.tif',
    window=64,
    overlap=16,
    probabilities=True,
    uncertainty=True,
    overwrite=True,
    progress=False,
)

# %% [markdown]
# ## 6. Probabilities and uncertainty
#
# The uncertainty band is the normalised entropy of the class probabilities (0:
# certain, 1: uniform). On held-out pixels it is higher where the prediction is
# wrong, which is what makes it useful for checking a map.

# %%
with rasterio.open(scene) as src:
    image = torch.from_numpy(src.read().astype(np.float32))
with rasterio.open(new / 'masks' / 'c.tif') as src:
    truth = src.read(1)
with rasterio.open(written['classes']) as src:
    classes = src.read(1)
with rasterio.open(written['probabilities']) as src:
    probability = src.read(2)
with rasterio.open(written['uncertainty']) as src:
    uncertainty = src.read(1)
figure = plot_episode(
    {
        'image': image,
        'mask': torch.from_numpy(truth.astype(np.int64)),
        'prediction': torch.from_numpy(classes.astype(np.int64)),
        'uncertainty': torch.from_numpy(uncertainty),
    },
    colormap=COLOURS,
    classes=CLASSES,
)
figure.savefig(out / 'prediction.png', dpi=80)
plt.close(figure)

wrong = classes != truth
figure, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
shown = left.imshow(probability, cmap='viridis', vmin=0, vmax=1)
left.set_title('probability of building')
left.axis('off')
figure.colorbar(shown, ax=left, fraction=0.046)
bins = np.linspace(0, 1, 21)
right.hist(uncertainty[~wrong], bins, density=True, alpha=0.6, label='right')
if wrong.any():
    right.hist(uncertainty[wrong], bins, density=True, alpha=0.6, label='wrong')
right.set_xlabel('uncertainty (normalised entropy)')
right.set_ylabel('density')
right.legend()
figure.tight_layout()
figure.savefig(out / 'probabilities.png', dpi=80)
plt.close(figure)

scores = {
    'pixel_accuracy': float((~wrong).mean()),
    'uncertainty_right': float(uncertainty[~wrong].mean()),
    'uncertainty_wrong': float(uncertainty[wrong].mean()) if wrong.any() else 0.0,
}
(out / 'scores.json').write_text(json.dumps(scores, indent=2))
print(json.dumps(scores, indent=2))
