"""SSG2 and PTAViT models and their building blocks.

``ssg2`` and ``ptavit`` hold the two models, ``encoder``, ``decoder``,
``fusion``, ``heads``, ``attention`` and ``blocks`` their parts, ``layers`` the
primitives (activations, convolutions, norms, MBConv, the Tanimoto kernel),
``presets`` the architecture configurations and ``convert`` the weight
conversion from and to the official code.
"""

from .attention import RelPatchAttention2D, RelPatchAttention3D
from .blocks import PTAViTBlock, PTAViTStage
from .decoder import PTAViTDecoder
from .encoder import DualPTAViTEncoder, PTAViTEncoder
from .fusion import CombineLayers, FuseHiLo, FusionCAT, FusionV2
from .heads import ConditionedMultitaskHead, hamacher_conorm, hamacher_tnorm
from .layers import D2Sigmoid, MBConv, MBConv3D, SigmoidCrisp, d2sigmoid
from .presets import ModelConfig, get_config, list_presets
from .ptavit import PTAViT
from .ssg2 import SSG2, SSG2Head

__all__ = (
    'SSG2',
    'CombineLayers',
    'ConditionedMultitaskHead',
    'D2Sigmoid',
    'DualPTAViTEncoder',
    'FuseHiLo',
    'FusionCAT',
    'FusionV2',
    'MBConv',
    'MBConv3D',
    'ModelConfig',
    'PTAViT',
    'PTAViTBlock',
    'PTAViTDecoder',
    'PTAViTEncoder',
    'PTAViTStage',
    'RelPatchAttention2D',
    'RelPatchAttention3D',
    'SSG2Head',
    'SigmoidCrisp',
    'd2sigmoid',
    'get_config',
    'hamacher_conorm',
    'hamacher_tnorm',
    'list_presets',
)
