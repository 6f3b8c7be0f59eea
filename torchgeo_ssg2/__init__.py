"""torchgeo-ssg2: SSG2 semantic segmentation with support sequences, as a TorchGeo extension.

The public names are importable from the top level (``from torchgeo_ssg2 import
SSG2Task``); they load lazily so that ``import torchgeo_ssg2`` stays cheap.
"""

import importlib
from typing import Any

__version__ = '0.1.0'

#: Public name -> sub-module that defines it.
_LAZY: dict[str, str] = {
    'SSG2': 'models',
    'PTAViT': 'models',
    'list_presets': 'models',
    'SSG2Task': 'trainers',
    'PTAViTTask': 'trainers',
    'SSG2Loss': 'losses',
    'set_operation_targets': 'targets',
    'DubaiAerial': 'datasets',
    'ISIC2018': 'datasets',
    'Potsdam': 'datasets',
    'PreparedPotsdam': 'datasets',
    'EpisodeDataset': 'episodes',
    'IndexSupportPolicy': 'episodes',
    'GeoSupportPolicy': 'episodes',
    'SupportPolicy': 'episodes',
    'DubaiAerialDataModule': 'datamodules',
    'ISIC2018DataModule': 'datamodules',
    'PotsdamDataModule': 'datamodules',
    'RasterEpisodeDataModule': 'datamodules',
    'PredictOptions': 'inference',
    'predict_raster': 'inference',
    'predict_rasters': 'inference',
}

__all__ = ('__version__', *_LAZY)


def __getattr__(name: str) -> Any:
    """Import public names on first use.

    Args:
        name: attribute name.

    Returns:
        the public object.

    Raises:
        AttributeError: for an unknown name.
    """
    if name in _LAZY:
        module = importlib.import_module(f'{__name__}.{_LAZY[name]}')
        return getattr(module, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__() -> list[str]:
    return sorted(__all__)
