"""datamodules."""

from .base import EpisodicNonGeoDataModule
from .dubai import DubaiAerialDataModule
from .geo import GeoEpisodeDataModule
from .isic import ISIC2018DataModule
from .potsdam import PotsdamDataModule
from .raster import RasterEpisodeDataModule

__all__: tuple[str, ...] = (
    'DubaiAerialDataModule',
    'EpisodicNonGeoDataModule',
    'GeoEpisodeDataModule',
    'ISIC2018DataModule',
    'PotsdamDataModule',
    'RasterEpisodeDataModule',
)
