"""SSG2 tasks under torchgeo 0.10's name for them (``torchgeo.tasks``).

The same classes as :mod:`torchgeo_ssg2.trainers`; either dotted path works in a
config (``torchgeo_ssg2.tasks.SSG2Task`` or ``torchgeo_ssg2.trainers.SSG2Task``).
"""

from ..trainers import MultitaskSegmentationTask, PTAViTTask, SSG2Task

__all__ = ('MultitaskSegmentationTask', 'PTAViTTask', 'SSG2Task')
