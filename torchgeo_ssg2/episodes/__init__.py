"""Episodes: a target and its T supports, built one way for every dataset.

* :mod:`.protocol`: :class:`SupportPolicy` (``draw(target_key, epoch) -> support
  keys``) and :class:`EpisodeIndex` ``(target, epoch)``, the one carrier of the
  epoch.
"""

from .protocol import EpisodeIndex, SupportPolicy, Window2D, check_epoch

__all__ = ('EpisodeIndex', 'SupportPolicy', 'Window2D', 'check_epoch')
