"""datasets."""

from .episodes import EpisodeDataset, EpisodeEpochCallback, set_episode_epoch

__all__: tuple[str, ...] = (
    'EpisodeDataset',
    'EpisodeEpochCallback',
    'set_episode_epoch',
)
