"""SSG2 and PTAViT models and their building blocks."""

from .attention import RelPatchAttention2D, RelPatchAttention3D
from .baseline import PTAViT
from .decoder import PTAViTDecoder
from .encoder import DualPTAViTEncoder, PTAViTEncoder
from .fusion import CombineLayers, FuseHiLo, FusionCAT, FusionV2
from .heads import ConditionedMultitaskHead, hamacher_conorm, hamacher_tnorm
from .layers import D2Sigmoid, SigmoidCrisp, d2sigmoid
from .presets import ModelConfig, get_config, list_presets
from .ptavit import PTAViTStage, PTAViTStage3D
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
    'ModelConfig',
    'PTAViT',
    'PTAViTDecoder',
    'PTAViTEncoder',
    'PTAViTStage',
    'PTAViTStage3D',
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
