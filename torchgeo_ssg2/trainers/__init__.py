"""Lightning tasks (torchgeo ``SemanticSegmentation`` subclasses) for SSG2 and PTAViT."""

from .base import (
    MultitaskSegmentationTask,
    normalise_probabilities,
    normalised_entropy,
)
from .ptavit import PTAViTTask
from .ssg2 import SSG2Task, sequence_uncertainty

__all__: tuple[str, ...] = (
    'MultitaskSegmentationTask',
    'PTAViTTask',
    'SSG2Task',
    'normalise_probabilities',
    'normalised_entropy',
    'sequence_uncertainty',
)
