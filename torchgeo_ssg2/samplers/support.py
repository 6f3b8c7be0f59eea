"""Support draws shared with inference: :func:`draw_without_target`.

The support policies live in :mod:`torchgeo_ssg2.episodes`; this module keeps
the import path that :mod:`.inference` uses.
"""

from ..episodes.index import draw_without_target

__all__ = ('draw_without_target',)
