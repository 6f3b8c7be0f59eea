"""torchgeo-ssg2: SSG2 semantic segmentation with support sequences, as a TorchGeo extension."""

__version__ = '0.1.0'

__all__ = ('__version__',)
