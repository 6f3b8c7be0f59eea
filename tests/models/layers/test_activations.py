import torch

from torchgeo_ssg2.models.layers import SigmoidCrisp, d2sigmoid


def test_d2sigmoid_formula_and_range() -> None:
    x = torch.linspace(-20, 20, 2001, dtype=torch.float64)
    s = torch.sigmoid(x)
    expected = s * (1 - s) * (2 * s - 1)
    torch.testing.assert_close(d2sigmoid(x), expected)
    assert d2sigmoid(x).abs().max() < 0.0963
    # minus the second derivative of the sigmoid
    xg = x.clone().requires_grad_(True)
    (ds,) = torch.autograd.grad(torch.sigmoid(xg).sum(), xg, create_graph=True)
    (d2s,) = torch.autograd.grad(ds.sum(), xg)
    torch.testing.assert_close(d2sigmoid(x), -d2s)


def test_d2sigmoid_gradcheck() -> None:
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True) * 4
    assert torch.autograd.gradcheck(d2sigmoid, (x.detach().requires_grad_(True),))


def test_d2sigmoid_extreme_inputs_finite() -> None:
    x = torch.tensor([-1e4, -100.0, 0.0, 100.0, 1e4], requires_grad=True)
    y = d2sigmoid(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


def test_sigmoid_crisp() -> None:
    act = SigmoidCrisp()
    x = torch.randn(2, 3, 4, 4)
    y = act(x)
    temperature = 0.01 + torch.sigmoid(torch.tensor(1.0))
    torch.testing.assert_close(y, torch.sigmoid(x / temperature))
    y.sum().backward()
    assert act.gamma.grad is not None and act.gamma.grad.abs() > 0
