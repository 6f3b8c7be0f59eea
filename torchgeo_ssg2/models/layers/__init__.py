"""Layer primitives of the PTAViT / SSG2 family.

Activations (:mod:`.activations`), normed and depthwise convolutions
(:mod:`.conv`), the channel LayerNorm and the batch-grouped BatchNorm
(:mod:`.norm`), MBConv (:mod:`.mbconv`), the feed-forward (:mod:`.mlp`) and the
Tanimoto similarity kernel of the attention (:mod:`.tanimoto`).
"""

from .activations import D2Sigmoid, SigmoidCrisp, d2sigmoid
from .conv import Conv2dNormed, Conv3dNormed, DepthwiseConv3d
from .mbconv import MBConv, MBConv3D, SqueezeExcitation
from .mlp import FeedForward
from .norm import (
    BatchNormUpdateRecorder,
    ChannelLayerNorm,
    GroupedBatchNorm,
    batch_groups,
)
from .tanimoto import patchify, scale_patches, tanimoto_compaction, tanimoto_similarity

__all__ = (
    'BatchNormUpdateRecorder',
    'ChannelLayerNorm',
    'Conv2dNormed',
    'Conv3dNormed',
    'D2Sigmoid',
    'DepthwiseConv3d',
    'FeedForward',
    'GroupedBatchNorm',
    'MBConv',
    'MBConv3D',
    'SigmoidCrisp',
    'SqueezeExcitation',
    'batch_groups',
    'd2sigmoid',
    'patchify',
    'scale_patches',
    'tanimoto_compaction',
    'tanimoto_similarity',
)
