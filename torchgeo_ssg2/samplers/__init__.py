"""Support-set samplers: which T support windows or items accompany each target."""

from .episode import EpisodeIndex, EpisodeSampler
from .support import SupportIndexSampler

__all__ = ('EpisodeIndex', 'EpisodeSampler', 'SupportIndexSampler')
