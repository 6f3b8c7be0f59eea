"""datamodules."""

from .base import EpisodicNonGeoDataModule
from .dubai import DubaiAerialDataModule

__all__: tuple[str, ...] = (
    'DubaiAerialDataModule',
    'EpisodicNonGeoDataModule',
)
