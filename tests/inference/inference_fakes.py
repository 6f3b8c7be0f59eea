"""Fake-data generators and pixel-wise models for the inference tests."""

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from lightning.pytorch import LightningModule
from rasterio.transform import Affine, from_origin
from torch import Tensor, nn

#: A projected CRS (UTM 40N, Dubai) and a transform with 0.5 m pixels.
CRS = 'EPSG:32640'
TRANSFORM = from_origin(500000.0, 2780000.0, 0.5, 0.5)


def make_raster(
    path: Path,
    height: int,
    width: int,
    count: int = 3,
    *,
    crs: str | None = CRS,
    transform: Affine | None = TRANSFORM,
    nodata: float | None = None,
    nodata_border: int = 0,
    dtype: str = 'uint8',
    smooth: bool = False,
    seed: int = 0,
    tiled: bool = True,
    block: tuple[int, int] = (16, 16),
) -> Path:
    """Write a fake raster.

    Args:
        path: File to write.
        height: Rows.
        width: Columns.
        count: Bands.
        crs: CRS, or None for a raster without georeferencing.
        transform: Affine transform, or None.
        nodata: Nodata value written in the file's metadata.
        nodata_border: Width of a border of nodata pixels (needs ``nodata``).
        dtype: Data type.
        smooth: Slowly varying sinusoids instead of random values.
        seed: Seed of the random values.
        tiled: Write a tiled GeoTIFF.
        block: Rows and columns of a tile (multiples of 16).

    Returns:
        The path.
    """
    rng = np.random.default_rng(seed)
    if smooth:
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
        bands = [
            127 + 100 * np.sin(rows / (37.0 + 11 * b) + cols / (53.0 + 7 * b) + b)
            for b in range(count)
        ]
        data = np.stack(bands)
    else:
        data = rng.integers(1, 250, size=(count, height, width)).astype(np.float64)
    if nodata_border:
        assert nodata is not None
        b = nodata_border
        data[:, :b, :] = nodata
        data[:, -b:, :] = nodata
        data[:, :, :b] = nodata
        data[:, :, -b:] = nodata
    profile: dict[str, Any] = {
        'driver': 'GTiff',
        'height': height,
        'width': width,
        'count': count,
        'dtype': dtype,
        'nodata': nodata,
    }
    if tiled:
        profile |= {'tiled': True, 'blockysize': block[0], 'blockxsize': block[1]}
    if crs is not None:
        profile['crs'] = crs
    if transform is not None:
        profile['transform'] = transform
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(data.astype(dtype))
    return path


class PixelModel(nn.Module):
    """A pixel-wise classifier: 1x1 convolution then softmax.

    Args:
        in_channels: Input bands.
        num_classes: Classes K.
        seed: Seed of the weights.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 4, seed: int = 0):
        super().__init__()
        self.in_channels = in_channels
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(in_channels, num_classes, 1)
        with torch.no_grad():
            self.conv.weight.copy_(
                torch.randn(self.conv.weight.shape, generator=gen) * 2
            )
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=gen))

    def forward(self, image: Tensor) -> Tensor:
        """Probabilities Bx K x H x W."""
        return self.conv(image).softmax(dim=1)


class EdgeModel(nn.Module):
    """A smooth model with strong window-edge effects (zero-padded 9x9 mean)."""

    in_channels = 3

    def forward(self, image: Tensor) -> Tensor:
        """Two-class probabilities from a locally averaged first band."""
        x = nn.functional.avg_pool2d(
            image[:, :1], 9, stride=1, padding=4, count_include_pad=True
        )
        return torch.cat([torch.sigmoid(x), 1 - torch.sigmoid(x)], dim=1)


class PixelTask(LightningModule):
    """A LightningModule with torchgeo's predict_step dict around PixelModel.

    Args:
        in_channels: Input bands.
        num_classes: Classes K.
        fail_after: Raise in predict_step after this many batches (tests of
            clean-up on error); None never.
    """

    def __init__(
        self, in_channels: int = 3, num_classes: int = 4, fail_after: int | None = None
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = PixelModel(in_channels, num_classes)
        self.calls = 0

    def forward(self, image: Tensor) -> Tensor:
        """Probabilities."""
        return self.model(image)

    def predict_step(
        self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor | None]:
        """torchgeo's predict dict plus an uncertainty map."""
        self.calls += 1
        if (
            self.hparams['fail_after'] is not None
            and self.calls > self.hparams['fail_after']
        ):
            raise RuntimeError('model failed')
        probs = self(batch['image'])
        return {
            'probabilities': probs,
            'uncertainty': 1 - probs.amax(dim=1),
            'bounds': batch.get('bounds'),
            'transform': batch.get('transform'),
        }


def read(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a raster and its profile."""
    with rasterio.open(path) as src:
        return src.read(), dict(src.profile)


def save_checkpoint(task: LightningModule, path: Path, cli: bool = True) -> Path:
    """Save a freshly built task as a Lightning checkpoint.

    Args:
        task: The task.
        path: Checkpoint file.
        cli: Store the class path the way ``torchgeo fit`` (LightningCLI) does,
            which ``torchgeo predict --ckpt_path`` needs.

    Returns:
        The path.
    """
    import lightning

    hparams = dict(task.hparams)
    if cli:
        cls = type(task)
        hparams = {
            '_class_path': f'{cls.__module__}.{cls.__qualname__}',
            **hparams,
            '_instantiator': 'lightning.pytorch.cli.instantiate_module',
        }
    torch.save(
        {
            'state_dict': task.state_dict(),
            'hyper_parameters': hparams,
            'pytorch-lightning_version': lightning.__version__,
        },
        path,
    )
    return path


def record_opens(monkeypatch: Any) -> list[Path]:
    """Record every file :func:`torchgeo_ssg2.inference.output.open_raster` opens.

    Args:
        monkeypatch: pytest's fixture (the patch is undone after the test).

    Returns:
        The list the opened paths are appended to.
    """
    from torchgeo_ssg2.inference import output

    opened: list[Path] = []
    open_raster = output.open_raster

    def recording_open(path: Path, *args: Any, **kwargs: Any) -> Any:
        opened.append(Path(path))
        return open_raster(path, *args, **kwargs)

    monkeypatch.setattr(output, 'open_raster', recording_open)
    return opened
