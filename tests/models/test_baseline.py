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
    image = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    grads = []
    for model in (plain, ckpt):
        grads.append(torch.autograd.grad(model(image).mean(), list(model.parameters())))
    for g, g_ckpt in zip(*grads, strict=True):
        torch.testing.assert_close(g, g_ckpt)
