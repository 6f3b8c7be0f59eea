"""datasets."""

from .dubai import DubaiAerial
from .images import UnreadableImageError
from .isic import ISIC2018
from .patches import GridPatchDataset, RandomPatchDataset
from .potsdam import Potsdam, PreparedPotsdam
from .potsdam_protocol import PotsdamProtocol
from .rasters import ImageRasters, MaskMapping, MaskRasters, RasterInputError

__all__: tuple[str, ...] = (
    'ISIC2018',
    'DubaiAerial',
    'GridPatchDataset',
    'ImageRasters',
    'MaskMapping',
    'MaskRasters',
    'Potsdam',
    'PotsdamProtocol',
    'PreparedPotsdam',
    'RandomPatchDataset',
    'RasterInputError',
    'UnreadableImageError',
)
