"""SSG2: semantic segmentation with a sequence of support images.

For a target image and T support images the shared-weight dual encoder and the
single decoder give one feature map ``Z_t`` per support. Three conditioned
multitask heads, shared over t, predict the intersection, union and difference of
the target's and support's classes; fuzzy (Hamacher) operations derive the target
(``I | D``) and the null set (``I ∩ D``) from them. The max of the intersections
and the min of the unions bound the target; a 3D PTAViT stage filters the feature
sequence; a bias-free 1x1 compressor merges the mean sequence features with both
bounds, and a last multitask head predicts the target.
"""

from functools import partial

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ._validation import check_image, check_support
from .attention import RelPatchAttention3D, _set_chunk_size, spatial_grid
from .blocks import PTAViTStage
from .decoder import PTAViTDecoder
from .encoder import DualPTAViTEncoder
from .heads import ConditionedMultitaskHead, hamacher_conorm, hamacher_tnorm
from .layers import BatchNormUpdateRecorder, MBConv3D, batch_groups
from .presets import ModelConfig, get_config

__all__ = ('SSG2', 'SSG2Head')


class SSG2Head(nn.Module):
    """Set-operation heads, sequence model, compressor and target head."""

    def __init__(self, channels: int, num_outputs: int, config: ModelConfig) -> None:
        """Initialise the head.

        Args:
            channels: feature channels F of the decoder.
            num_outputs: K, classes including NULL.
            config: the model configuration.
        """
        super().__init__()
        k, act, g = num_outputs, config.segm_act, config.norm_groups
        self.num_outputs = k
        self.intersection = ConditionedMultitaskHead(channels, k, act, g)
        self.union = ConditionedMultitaskHead(channels, k, act, g)
        self.difference = ConditionedMultitaskHead(channels, k, act, g)
        # the non-recurrent sequence model over BxFxTxHxW: valid for any T >= 1
        # (padded 3D convolutions, per-step SE, mean compaction), not
        # permutation invariant in T
        self.sequence = PTAViTStage(
            channels,
            channels,
            config.blocks_3d,
            mbconv_layer=partial(
                MBConv3D, expansion=config.expansion, se_ratio=config.se_ratio
            ),
            attn_layer=partial(
                RelPatchAttention3D,
                heads=config.stage_heads[0],
                grid=spatial_grid(1, config.spatial_size),
            ),
            dropout=config.dropout,
        )
        self.compressor = nn.Conv2d(channels + 2 * 3 * k, channels, 1, bias=False)
        self.target = ConditionedMultitaskHead(channels, k, act, g)

    def support_outputs(
        self,
        z: Tensor,
        difference: bool = True,
        checkpointing: bool = False,
        chunk_size: int | None = None,
    ) -> dict[str, Tensor]:
        """Per-support set-operation predictions.

        Args:
            z: BxTxFxHxW features.
            difference: also run the difference head.
            checkpointing: recompute each head (per chunk of supports) in backward.
            chunk_size: run the heads on chunks of this many supports (the
                heads work per sample, so the result is the same); ``None``: all T.

        Returns:
            ``"intersection"``, ``"union"`` (and ``"difference"``), each BxTx3KxHxW.
        """
        b, t = z.shape[:2]
        chunk = chunk_size or t
        heads = {'intersection': self.intersection, 'union': self.union}
        if difference:
            heads['difference'] = self.difference
        out = {}
        for name, head in heads.items():
            parts = []
            for start in range(0, t, chunk):
                flat = z[:, start : start + chunk].reshape(-1, *z.shape[2:])
                y = (
                    checkpoint(head, flat, use_reentrant=False)
                    if checkpointing
                    else head(flat)
                )
                parts.append(y.reshape(b, -1, *y.shape[1:]))
            out[name] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return out

    def target_outputs(
        self, z: Tensor, intersection: Tensor, union: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Sequence model and target prediction.

        Args:
            z: BxTxFxHxW features.
            intersection: BxTx3KxHxW intersection predictions.
            union: BxTx3KxHxW union predictions.

        Returns:
            the target prediction Bx3KxHxW and the sequence features BxTxFxHxW.
        """
        sequence = self.sequence(z.transpose(1, 2)).transpose(1, 2)
        priors = (sequence.mean(1), intersection.amax(1), union.amin(1))
        target = self.target(self.compressor(torch.cat(priors, dim=1)))
        return target, sequence


class SSG2(nn.Module):
    """SSG2 (Diakogiannis et al., 2024): segmentation conditioned on T supports.

    ``num_classes`` counts the real classes; the model adds a NULL class, so every
    multitask output has ``K = num_classes + 1`` channels per task (NULL last) and
    ``3K`` in all: ``[0:K]`` segmentation, ``[K:2K]`` boundary, ``[2K:3K]``
    distance.

    ``forward = forward_head ∘ forward_features``. The T supports run as one
    batched pass (in chunks of :meth:`set_support_chunk_size` supports) and the
    support-independent part of the target stream is computed once; the result
    is that of the official per-support loop.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        preset: str = 'paper',
        *,
        checkpointing: bool = False,
        support_chunk_size: int | None = None,
        attention_chunk_size: int | None = None,
        **overrides: object,
    ) -> None:
        """Initialise the model.

        Args:
            in_channels: input bands C.
            num_classes: real classes (without NULL).
            preset: a name from :func:`~torchgeo_ssg2.models.presets.list_presets`.
            checkpointing: see :meth:`set_grad_checkpointing`.
            support_chunk_size: see :meth:`set_support_chunk_size`.
            attention_chunk_size: see :meth:`set_attention_chunk_size`.
            **overrides: :class:`~torchgeo_ssg2.models.presets.ModelConfig` fields.

        Raises:
            ValueError: for bad arguments.
        """
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(
                f'in_channels and num_classes must be >= 1, got {in_channels}, '
                f'{num_classes}'
            )
        self.config = get_config(preset, **overrides)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_outputs = num_classes + 1
        self.encoder = DualPTAViTEncoder(in_channels, self.config)
        self.decoder = PTAViTDecoder(self.config)
        self.head = SSG2Head(self.config.filters, self.num_outputs, self.config)
        self.grad_checkpointing = False
        self.support_chunk_size: int | None = None
        self.set_grad_checkpointing(checkpointing)
        self.set_support_chunk_size(support_chunk_size)
        self.set_attention_chunk_size(attention_chunk_size)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing (recomputation in backward).

        Covers the per-support base passes and the per-support heads (one
        checkpoint per chunk of supports) and each part (MBConv, attention gate,
        feed-forward) of each 3D block. Same outputs and gradients, less memory,
        about one more forward pass of time; BatchNorm running statistics are
        updated again during the recomputation (as with any checkpointed
        BatchNorm). From YAML: the trainers' ``model_kwargs: {checkpointing:
        true}``.

        Args:
            enable: on or off.
        """
        self.grad_checkpointing = bool(enable)
        self.head.sequence.grad_checkpointing = bool(enable)

    def set_support_chunk_size(self, chunk_size: int | None) -> None:
        """Supports processed together in one batched pass (less memory).

        Args:
            chunk_size: supports per pass (>= 1), or ``None`` for all T at once.

        Raises:
            ValueError: for a chunk size below 1.
        """
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(
                f'support_chunk_size must be >= 1 or None, got {chunk_size}'
            )
        self.support_chunk_size = chunk_size

    def set_attention_chunk_size(self, chunk_size: int | None) -> None:
        """Query tokens per block of every Tanimoto similarity matrix.

        Blocks of ``chunk_size`` query rows, forward and backward, recomputed in
        backward: no Nq x Nk matrix is formed. ``None`` picks blocks of about 2M
        similarities (and one block, kept for backward, for smaller matrices).
        Same function either way.

        Args:
            chunk_size: rows per block (>= 1) or ``None``.

        Raises:
            ValueError: for a chunk size below 1.
        """
        _set_chunk_size(self, chunk_size)

    def _checkpointing(self) -> bool:
        return self.grad_checkpointing and torch.is_grad_enabled()

    def forward_features(self, image: Tensor, support_image: Tensor) -> Tensor:
        """Decoder features of every (target, support) pair, in one batched pass.

        In training mode the BatchNorm running statistics are updated as the
        official per-support loop updates them: once per (target, support) pair
        and stream, in pair order (see
        :class:`~torchgeo_ssg2.models.layers.BatchNormUpdateRecorder`).

        Args:
            image: BxCxHxW target images (H, W multiples of 32).
            support_image: BxTxCxHxW supports, T >= 1.

        Returns:
            BxTxFxHxW features.
        """
        check_image(image, self.in_channels)
        check_support(image, support_image)
        t = support_image.shape[1]
        chunk = self.support_chunk_size or t
        with BatchNormUpdateRecorder(t) as recorder:
            recorder.broadcast = True
            target = self.encoder.target_features(image)
            recorder.broadcast = False
            zs = []
            for start in range(0, t, chunk):
                recorder.start = start
                support = support_image[:, start : start + chunk]
                if self._checkpointing():
                    z = checkpoint(
                        self._base_pass, image, support, *target, use_reentrant=False
                    )
                else:
                    z = self._base_pass(image, support, *target)
                zs.append(z)
        return zs[0] if len(zs) == 1 else torch.cat(zs, dim=1)

    def _base_pass(
        self, image: Tensor, support: Tensor, target_x0: Tensor, target_s0: Tensor
    ) -> Tensor:
        """Encoder and decoder for a chunk of supports: BxTxFxHxW features."""
        features = self.encoder(image, support, (target_x0, target_s0))
        tc = support.shape[1]
        with batch_groups(tc):
            z = self.decoder([f.reshape(-1, *f.shape[2:]) for f in features])
        return z.reshape(image.shape[0], tc, *z.shape[1:])

    def forward_head(self, z: Tensor, inference: bool = False) -> dict[str, Tensor]:
        """Set-operation heads, sequence model and target head.

        Args:
            z: BxTxFxHxW features from :meth:`forward_features`.
            inference: only what the target needs: no difference head, no fuzzy
                outputs, no sequence features.

        Returns:
            ``"target"`` Bx3KxHxW; ``"intersection"``, ``"union"`` (and
            ``"difference"``) BxTx3KxHxW; unless ``inference`` also
            ``"fuzzy_target"``, ``"fuzzy_null"`` BxTxKxHxW and ``"sequence"``
            BxTxFxHxW (pre-sigmoid sequence features).
        """
        support = self.head.support_outputs(
            z, not inference, self._checkpointing(), self.support_chunk_size
        )
        target, sequence = self.head.target_outputs(
            z, support['intersection'], support['union']
        )
        out = {'target': target, **support}
        if not inference:
            k = self.num_outputs
            inter, diff = (
                support['intersection'][:, :, :k],
                support['difference'][:, :, :k],
            )
            out['fuzzy_target'] = hamacher_conorm(inter, diff)
            out['fuzzy_null'] = hamacher_tnorm(inter, diff)
            out['sequence'] = sequence
        return out

    def forward(self, image: Tensor, support_image: Tensor) -> dict[str, Tensor]:
        """Predict the target and all auxiliary outputs.

        Args:
            image: BxCxHxW target images (H, W multiples of 32).
            support_image: BxTxCxHxW supports, T >= 1.

        Returns:
            ``"target"`` Bx3KxHxW; ``"intersection"``, ``"union"``,
            ``"difference"`` BxTx3KxHxW; ``"fuzzy_target"``, ``"fuzzy_null"``
            BxTxKxHxW; ``"sequence"`` BxTxFxHxW (pre-sigmoid sequence features).
        """
        return self.forward_head(self.forward_features(image, support_image))

    def forward_inference(
        self, image: Tensor, support_image: Tensor
    ) -> dict[str, Tensor]:
        """Only what the target needs: no difference head, no fuzzy outputs.

        Args:
            image: BxCxHxW target images.
            support_image: BxTxCxHxW supports.

        Returns:
            ``"target"`` Bx3KxHxW, ``"intersection"`` and ``"union"`` BxTx3KxHxW.
        """
        z = self.forward_features(image, support_image)
        return self.forward_head(z, inference=True)
