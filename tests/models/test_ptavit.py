import pytest
import torch

from torchgeo_ssg2.models import PTAViT


def test_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    model = PTAViT(4, 3, preset='test')
    out = model(torch.randn(2, 4, 64, 96))
    assert out.shape == (2, 9, 64, 96)
    assert (out >= 0).all() and (out <= 1).all()
    out.sum().backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()
    )
    assert model.num_outputs == 3


def test_binary() -> None:
    model = PTAViT(3, 1, preset='test').eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_bad_input() -> None:
    model = PTAViT(4, 3, preset='test')
    with pytest.raises(ValueError, match='channels'):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match='multiples of 32'):
        model(torch.randn(1, 4, 40, 32))


@pytest.mark.parametrize(
    ('preset', 'count'),
    # the official UNet-like baseline instantiated with the same configuration
    # (benchmarks/bench_original.py), 5 bands, 6 classes
    [('paper', 72_413_129), ('small', 8_267_753)],
)
def test_parameter_parity(preset: str, count: int) -> None:
    with torch.device('meta'):
        model = PTAViT(5, 6, preset=preset)
    assert sum(p.numel() for p in model.parameters()) == count


def test_checkpointing_same_gradients() -> None:
    torch.manual_seed(0)
    plain = PTAViT(3, 2, preset='test', dropout=0.0).double()
    ckpt = PTAViT(3, 2, preset='test', dropout=0.0, checkpointing=True).double()
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.grad_checkpointing and not plain.grad_checkpointing
    image = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    grads = []
    for model in (plain, ckpt):
        grads.append(torch.autograd.grad(model(image).mean(), list(model.parameters())))
    for g, g_ckpt in zip(*grads, strict=True):
        torch.testing.assert_close(g, g_ckpt)


def test_features_and_head() -> None:
    torch.manual_seed(0)
    model = PTAViT(3, 2, preset='test').eval()
    image = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        features = model.forward_features(image)
        assert features.shape == (1, model.config.filters, 64, 32)
        torch.testing.assert_close(model.forward_head(features), model(image))


def test_runtime_switches() -> None:
    model = PTAViT(3, 2, preset='test')
    model.set_grad_checkpointing()
    assert model.grad_checkpointing
    model.set_grad_checkpointing(False)
    assert not model.grad_checkpointing
    model.set_attention_chunk_size(5)
    sizes = {m.chunk_size for m in model.modules() if hasattr(m, 'chunk_size')}
    assert sizes == {5}
    with pytest.raises(ValueError, match='attention_chunk_size'):
        model.set_attention_chunk_size(0)
    with pytest.raises(ValueError, match='unknown'):
        PTAViT(3, 2, preset='test', support_chunk_size=2)
