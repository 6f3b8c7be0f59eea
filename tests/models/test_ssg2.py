from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from torchgeo_ssg2.models import SSG2

Reference = Callable[[SSG2, Tensor, Tensor], dict[str, Tensor]]

C, NUM_CLASSES, K = 3, 2, 3


def _inputs(
    b: int, t: int, h: int, w: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, C, h, w, generator=g), torch.randn(b, t, C, h, w, generator=g)


@pytest.fixture(scope='module')
def model() -> SSG2:
    torch.manual_seed(0)
    return SSG2(C, NUM_CLASSES, preset='test')


def _no_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def test_attributes(model: SSG2) -> None:
    assert model.num_classes == NUM_CLASSES
    assert model.num_outputs == K
    assert model.in_channels == C


@pytest.mark.parametrize(
    ('b', 't', 'h', 'w'), [(2, 1, 32, 32), (1, 3, 64, 96), (2, 2, 96, 64)]
)
def test_forward_shapes(model: SSG2, b: int, t: int, h: int, w: int) -> None:
    image, support = _inputs(b, t, h, w)
    with torch.no_grad():
        out = model(image, support)
    f = model.config.filters
    assert set(out) == {
        'target',
        'intersection',
        'union',
        'difference',
        'fuzzy_target',
        'fuzzy_null',
        'sequence',
    }
    assert out['target'].shape == (b, 3 * K, h, w)
    for key in ('intersection', 'union', 'difference'):
        assert out[key].shape == (b, t, 3 * K, h, w)
    for key in ('fuzzy_target', 'fuzzy_null'):
        assert out[key].shape == (b, t, K, h, w)
    assert out['sequence'].shape == (b, t, f, h, w)
    for key, value in out.items():
        assert torch.isfinite(value).all()
        if key != 'sequence':
            assert (value >= 0).all() and (value <= 1).all()


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = SSG2(C, NUM_CLASSES, preset='test')
    image, support = _inputs(2, 2, 32, 32)
    out = model(image, support)
    sum(v.sum() for v in out.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    zero = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
    assert not zero
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_determinism_under_seed() -> None:
    image, support = _inputs(2, 2, 32, 32)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = SSG2(C, NUM_CLASSES, preset='test')
        torch.manual_seed(7)  # dropout draws
        outs.append(model(image, support))
    for key in outs[0]:
        torch.testing.assert_close(outs[0][key], outs[1][key], rtol=0, atol=0)


def test_forward_inference_matches_forward(model: SSG2) -> None:
    model.eval()
    image, support = _inputs(1, 2, 64, 96)
    with torch.no_grad():
        full = model(image, support)
        fast = model.forward_inference(image, support)
    assert set(fast) == {'target', 'intersection', 'union'}
    for key in fast:
        torch.testing.assert_close(fast[key], full[key])
    model.train()


def _assert_outputs_close(
    a: dict, b: dict, atol: float = 1e-5, rtol: float = 1e-4
) -> None:
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=rtol)


@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_batched_equals_per_support_loop(mode: str, ssg2_reference: Reference) -> None:
    # float64 so that only real differences show; train mode checks per-support
    # BatchNorm statistics (dropout off to compare) and the gradients
    torch.manual_seed(0)
    model = SSG2(C, NUM_CLASSES, preset='test', dropout=0.0).double()
    model.train(mode == 'train')
    image, support = (x.double() for x in _inputs(2, 3, 32, 64))
    batched = model(image, support)
    reference = ssg2_reference(model, image, support)
    _assert_outputs_close(batched, reference, atol=1e-10, rtol=1e-8)
    if mode == 'train':
        params = list(model.parameters())

        def loss(out: dict) -> torch.Tensor:
            return sum(
                (v * torch.linspace(0, 1, v.numel(), dtype=v.dtype).view_as(v)).sum()
                for v in out.values()
            )

        grads = torch.autograd.grad(loss(batched), params)
        grads_ref = torch.autograd.grad(loss(reference), params)
        for g, g_ref in zip(grads, grads_ref, strict=True):
            torch.testing.assert_close(g, g_ref, atol=1e-8, rtol=1e-7)


@pytest.mark.parametrize(
    ('length', 'chunk', 'momentum'),
    [(1, None, 0.1), (3, None, 0.1), (3, 1, 0.1), (3, 2, 0.1), (3, 2, None)],
)
def test_running_statistics_follow_the_per_support_loop(
    length: int, chunk: int | None, momentum: float | None, ssg2_reference: Reference
) -> None:
    # the official loop updates every BatchNorm once per (target, support) pair
    # and stream, in pair order; the batched pass records and replays that order
    torch.manual_seed(0)
    batched = SSG2(
        C, NUM_CLASSES, preset='test', dropout=0.0, support_chunk_size=chunk
    ).double()
    loop = SSG2(C, NUM_CLASSES, preset='test', dropout=0.0).double()
    with torch.no_grad():  # non-default statistics, so that the order matters
        for module in batched.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.num_batches_tracked.fill_(3)
    loop.load_state_dict(batched.state_dict())
    for model in (batched, loop):  # None: cumulative average
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = momentum
    image, support = (x.double() for x in _inputs(2, length, 32, 32))
    for _ in range(2):
        batched(image, support)
        ssg2_reference(loop, image, support)
    reference = loop.state_dict()
    compared = 0
    for name, value in batched.state_dict().items():
        if 'running' in name or 'num_batches' in name:
            torch.testing.assert_close(value, reference[name], atol=1e-12, rtol=1e-10)
            compared += 1
    assert compared > 30
    norm = batched.encoder.encoder.stages[0][0].mbconv.bn_in
    # two steps: the target's first stage and each support once per pair
    assert int(norm.num_batches_tracked) == 3 + 2 * 2 * length


def test_support_chunks_equal_one_pass() -> None:
    torch.manual_seed(0)
    model = SSG2(C, NUM_CLASSES, preset='test', dropout=0.0).double()
    chunked = SSG2(C, NUM_CLASSES, preset='test', dropout=0.0, support_chunk_size=2)
    chunked.double().load_state_dict(model.state_dict())
    image, support = (x.double() for x in _inputs(2, 3, 32, 32))
    _assert_outputs_close(model(image, support), chunked(image, support), 1e-10, 1e-8)


def test_target_side_computed_once(model: SSG2, ssg2_reference: Reference) -> None:
    # conv1/stem/first stage see the target once and each support once
    seen = []
    hook = model.encoder.encoder.stem.register_forward_hook(
        lambda _m, args, _out: seen.append(args[0].shape[0])
    )
    image, support = _inputs(2, 3, 32, 32)
    with torch.no_grad():
        model(image, support)
        assert sorted(seen) == [2, 6]
        seen.clear()
        ssg2_reference(model, image, support)
        assert seen == [2] * 6
    hook.remove()


def test_large_and_odd_sizes(model: SSG2) -> None:
    # 512 px works (the original's grid formula breaks above 256)
    model.eval()
    image, support = _inputs(1, 1, 512, 160)
    with torch.no_grad():
        out = model.forward_inference(image, support)
    assert out['target'].shape == (1, 3 * K, 512, 160)
    model.train()


def test_spatial_size_512_builds_and_runs() -> None:
    model = SSG2(C, NUM_CLASSES, preset='test', spatial_size=512).eval()
    image, support = _inputs(1, 2, 32, 64)
    with torch.no_grad():
        assert model(image, support)['target'].shape == (1, 3 * K, 32, 64)


@pytest.mark.parametrize(
    ('image_shape', 'support_shape', 'match'),
    [
        ((1, C, 48, 32), (1, 1, C, 48, 32), 'multiples of 32'),
        ((1, C, 32, 32), (1, 1, C + 1, 32, 32), 'does not match'),
        ((1, C + 1, 32, 32), (1, 1, C + 1, 32, 32), 'channels'),
        ((C, 32, 32), (1, 1, C, 32, 32), '4D'),
        ((1, C, 32, 32), (1, C, 32, 32), '5D'),
        ((1, C, 32, 32), (1, 0, C, 32, 32), 'T >= 1'),
        ((1, C, 32, 32), (2, 1, C, 32, 32), 'does not match'),
    ],
)
def test_bad_inputs(
    model: SSG2, image_shape: tuple, support_shape: tuple, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(image_shape), torch.zeros(support_shape))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match='unknown preset'):
        SSG2(C, NUM_CLASSES, preset='huge')
    with pytest.raises(ValueError, match='unknown model option'):
        SSG2(C, NUM_CLASSES, preset='test', filterz=8)
    with pytest.raises(ValueError, match='num_classes'):
        SSG2(C, 0, preset='test')


@pytest.mark.parametrize(
    ('preset', 'count'),
    # the official implementation instantiated with the same configuration
    # (benchmarks/bench_original.py): ISPRS paper setting (K = 7) and 32 filters
    [('paper', 75_300_566), ('small', 8_653_382)],
)
def test_parameter_parity(preset: str, count: int) -> None:
    with torch.device('meta'):
        model = SSG2(5, 6, preset=preset)
    assert sum(p.numel() for p in model.parameters()) == count


def test_runs_on_meta_device() -> None:
    # FLOP counting (benchmarks/bench_model.py --flops) runs the model on 'meta',
    # where autocast does not exist: the bf16 guards must not query it there
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device('meta'):
        model = SSG2(C, NUM_CLASSES, preset='test')
        image = torch.randn(2, C, 32, 32)
        support = torch.randn(2, 2, C, 32, 32)
        with FlopCounterMode(display=False) as counter:
            out = model(image, support)
            out['target'].mean().backward()
    assert out['target'].shape == (2, 3 * (NUM_CLASSES + 1), 32, 32)
    assert counter.get_total_flops() > 0
    counts = counter.get_flop_counts()
    assert sum(counts['SSG2.head.sequence'].values()) > 0


@pytest.mark.parametrize(
    ('dropout', 'chunk'),
    [(0.1, None), (0.0, 1)],  # chunks draw dropout masks in another order
)
def test_checkpointing_same_outputs_and_gradients(
    dropout: float, chunk: int | None
) -> None:
    torch.manual_seed(0)
    plain = SSG2(C, NUM_CLASSES, preset='test', dropout=dropout).double()
    ckpt = SSG2(
        C,
        NUM_CLASSES,
        preset='test',
        dropout=dropout,
        checkpointing=True,
        support_chunk_size=chunk,
    )
    ckpt.double().load_state_dict(plain.state_dict())
    image, support = (x.double() for x in _inputs(2, 2, 32, 32))
    results = []
    for model in (plain, ckpt):
        torch.manual_seed(5)  # same dropout masks (checkpoint replays the RNG)
        out = model(image, support)
        loss = sum(v.mean() for v in out.values())
        results.append((out, torch.autograd.grad(loss, list(model.parameters()))))
    _assert_outputs_close(results[0][0], results[1][0], 1e-10, 1e-8)
    for g, g_ckpt in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(g, g_ckpt, atol=1e-10, rtol=1e-8)


def test_bfloat16_autocast(model: SSG2) -> None:
    image, support = _inputs(2, 2, 32, 32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(image, support)
        loss = sum(v.float().mean() for v in out.values())
    loss.backward()
    assert all(torch.isfinite(v).all() for v in out.values())
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.zero_grad(set_to_none=True)


def test_bfloat16_autocast_with_ssg2_loss() -> None:
    """Forward and backward of SSG2 + SSG2Loss under bf16 autocast stay finite."""
    from torchgeo_ssg2.losses import SSG2Loss
    from torchgeo_ssg2.targets import set_operation_targets

    torch.manual_seed(0)
    model = SSG2(C, NUM_CLASSES, preset='test', checkpointing=True)
    image, support = _inputs(2, 2, 32, 32)
    g = torch.Generator().manual_seed(1)
    mask = torch.randint(0, NUM_CLASSES, (2, 32, 32), generator=g)
    support_mask = torch.randint(0, NUM_CLASSES, (2, 2, 32, 32), generator=g)
    targets = set_operation_targets(mask, support_mask, NUM_CLASSES)
    loss_fn = SSG2Loss(generator=torch.Generator().manual_seed(2))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(image, support)
        losses = loss_fn(out, targets)
    losses['loss'].backward()
    assert all(torch.isfinite(v).all() for v in losses.values())
    for p in model.parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32
        assert torch.isfinite(p.grad).all()


def test_attention_chunk_size_same_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    plain = SSG2(C, NUM_CLASSES, preset='test', dropout=0.0).double()
    chunked = SSG2(C, NUM_CLASSES, preset='test', dropout=0.0, attention_chunk_size=3)
    chunked.double().load_state_dict(plain.state_dict())
    assert chunked.encoder.fuse_first.att.chunk_size == 3
    assert chunked.head.sequence[0].att.chunk_size == 3
    image, support = (x.double() for x in _inputs(2, 2, 32, 32))
    results = []
    for model in (plain, chunked):
        out = model(image, support)
        loss = sum(v.mean() for v in out.values())
        results.append((out, torch.autograd.grad(loss, list(model.parameters()))))
    _assert_outputs_close(results[0][0], results[1][0], 1e-10, 1e-8)
    for g, g_chunk in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(g, g_chunk, atol=1e-10, rtol=1e-8)
    with pytest.raises(ValueError, match='attention_chunk_size'):
        SSG2(C, NUM_CLASSES, preset='test', attention_chunk_size=0)


def test_features_and_head(model: SSG2) -> None:
    model.eval()
    image, support = _inputs(2, 3, 32, 32)
    with torch.no_grad():
        z = model.forward_features(image, support)
        assert z.shape == (2, 3, model.config.filters, 32, 32)
        _assert_outputs_close(model.forward_head(z), model(image, support), 0, 0)
        fast = model.forward_head(z, inference=True)
        assert set(fast) == {'target', 'intersection', 'union'}
    model.train()


def test_runtime_switches() -> None:
    model = SSG2(C, NUM_CLASSES, preset='test')
    assert not model.grad_checkpointing and model.support_chunk_size is None
    model.set_grad_checkpointing()
    assert model.grad_checkpointing and model.head.sequence.grad_checkpointing
    model.set_grad_checkpointing(False)
    assert not model.head.sequence.grad_checkpointing
    model.set_support_chunk_size(2)
    assert model.support_chunk_size == 2
    with pytest.raises(ValueError, match='support_chunk_size'):
        model.set_support_chunk_size(0)
    with pytest.raises(ValueError, match='support_chunk_size'):
        SSG2(C, NUM_CLASSES, preset='test', support_chunk_size=0)
    # runtime switches are not part of the architecture
    assert not hasattr(model.config, 'checkpointing')


def test_bfloat16_gradients_finite_over_seeds() -> None:
    """CPU bf16 grouped Conv3d gave non-finite weight gradients for a few seeds in
    30 (which ones varied between processes); all must stay finite now."""
    from torchgeo_ssg2.losses import SSG2Loss
    from torchgeo_ssg2.targets import set_operation_targets

    bad = []
    for seed in range(30):
        torch.manual_seed(seed)
        model = SSG2(4, 3, preset='test', checkpointing=True)
        image, support = torch.randn(2, 4, 32, 32), torch.randn(2, 2, 4, 32, 32)
        g = torch.Generator().manual_seed(seed)
        mask = torch.randint(0, 3, (2, 32, 32), generator=g)
        support_mask = torch.randint(0, 3, (2, 2, 32, 32), generator=g)
        targets = set_operation_targets(mask, support_mask, 3)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model(image, support)
            loss_fn = SSG2Loss(generator=torch.Generator().manual_seed(2))
            loss = loss_fn(out, targets)['loss']
        loss.backward()
        names = [
            n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()
        ]
        if names:
            bad.append((seed, names))
    assert bad == []


def test_official_normalisation_layout() -> None:
    # checked against the official code by weight transfer
    # (benchmarks/bench_original.py --equivalence): the fusion, cross-attention
    # and FuseHiLo attentions normalise with the model's norm_groups, the stage
    # and 3D attentions with C / 4; fuse_first projections are dense
    with torch.device('meta'):
        model = SSG2(5, 6, preset='small')
    groups = model.config.norm_groups
    enc = model.encoder
    attentions = [enc.fuse_first.att, *enc.cross, model.decoder.fuse_hilo.att]
    for att in attentions:
        assert att.query[1].num_groups == groups
        assert att.key_value[1].num_groups == groups
    assert enc.fuse_first.att.query[0].groups == 1
    assert enc.fuse_first.att.key_value[0].groups == 2
    stage_att = enc.encoder.stages[1][0].att
    assert stage_att.query[1].num_groups == stage_att.query[0].out_channels // 4
    seq_att = model.head.sequence[0].att
    assert seq_att.query[1].num_groups == seq_att.query[0].out_channels // 4
