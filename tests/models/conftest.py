from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor

from torchgeo_ssg2.models import SSG2, hamacher_conorm, hamacher_tnorm


@pytest.fixture(autouse=True, scope='module')
def _single_thread() -> Iterator[None]:
    # the models' tests use tiny tensors: one thread avoids OpenMP
    # oversubscription on a shared machine, and is faster at these sizes
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pair_features(model: SSG2, image: Tensor, support: Tensor) -> Tensor:
    """Decoder features of one BxCxHxW target/support pair, everything recomputed."""
    enc, base = model.encoder, model.encoder.encoder
    xt0, xs0 = base.conv1(image), base.conv1(support)
    features = [enc.fuse_first(xt0, xs0)]
    xt, xs = base.stem(xt0), base.stem(xs0)
    for stage, cross, fusion in zip(base.stages, enc.cross, enc.fusions, strict=True):
        xt, xs = stage(xt), stage(xs)
        xt = xt + cross(xs, xt)
        xs = xs + cross(xt, xs)
        features.append(fusion(xt, xs))
    return model.decoder(features)


def _ssg2_reference(
    model: SSG2, image: Tensor, support_image: Tensor
) -> dict[str, Tensor]:
    """The official per-support loop: one full pass and head calls per support.

    The oracle of SSG2's batched path (same outputs, gradients and BatchNorm
    running-statistic updates).
    """
    head = model.head
    zs: list[Tensor] = []
    parts: dict[str, list[Tensor]] = {'intersection': [], 'union': [], 'difference': []}
    for t in range(support_image.shape[1]):
        z = _pair_features(model, image, support_image[:, t])
        zs.append(z)
        parts['intersection'].append(head.intersection(z))
        parts['union'].append(head.union(z))
        parts['difference'].append(head.difference(z))
    support = {name: torch.stack(v, dim=1) for name, v in parts.items()}
    target, sequence = head.target_outputs(
        torch.stack(zs, dim=1), support['intersection'], support['union']
    )
    k = model.num_outputs
    inter, diff = support['intersection'][:, :, :k], support['difference'][:, :, :k]
    return {
        'target': target,
        **support,
        'fuzzy_target': hamacher_conorm(inter, diff),
        'fuzzy_null': hamacher_tnorm(inter, diff),
        'sequence': sequence,
    }


@pytest.fixture(scope='session')
def ssg2_reference() -> Callable[[SSG2, Tensor, Tensor], dict[str, Tensor]]:
    """``reference(model, image, support_image)``: the per-support loop oracle."""
    return _ssg2_reference
