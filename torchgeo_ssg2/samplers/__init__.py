"""Support selection at inference time.

The support policies of training (:class:`~torchgeo_ssg2.episodes.SupportPolicy`
and its implementations) live in :mod:`torchgeo_ssg2.episodes`.

* :mod:`.inference`: supports at prediction time, from the raster itself
  (:class:`RasterSupportSelector`) or from a bank (:class:`SupportBank`).
"""

from .inference import SUPPORT_SOURCES, RasterSupportSelector, SupportBank

__all__ = ('SUPPORT_SOURCES', 'RasterSupportSelector', 'SupportBank')
