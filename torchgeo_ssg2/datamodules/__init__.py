"""datamodules."""

from .base import EpisodicNonGeoDataModule
from .dubai import DubaiAerialDataModule
from .isic import ISIC2018DataModule
from .potsdam import PotsdamDataModule

__all__: tuple[str, ...] = (
    'DubaiAerialDataModule',
    'EpisodicNonGeoDataModule',
    'ISIC2018DataModule',
    'PotsdamDataModule',
)
