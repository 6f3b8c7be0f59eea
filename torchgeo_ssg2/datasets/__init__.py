"""datasets."""

from .dubai import DubaiAerial
from .episodes import (
    EpisodeDataset,
    EpisodeEpochCallback,
    GeoEpisodeDataset,
    set_episode_epoch,
)

__all__: tuple[str, ...] = (
    'DubaiAerial',
    'EpisodeDataset',
    'EpisodeEpochCallback',
    'GeoEpisodeDataset',
    'set_episode_epoch',
)
