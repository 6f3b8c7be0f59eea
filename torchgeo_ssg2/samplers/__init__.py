"""Support selection at inference time.

The support policies of training (:class:`~torchgeo_ssg2.episodes.SupportPolicy`
and its implementations) live in :mod:`torchgeo_ssg2.episodes`.

* :mod:`.inference`: supports at prediction time, from the raster itself
  (:class:`RasterSupportSelector`) or from a bank (:class:`SupportBank`).
"""

from .inference import ImageChips, RasterSupportSelector, SupportBank

__all__ = ('ImageChips', 'RasterSupportSelector', 'SupportBank')
