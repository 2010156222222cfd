"""Helpers shared by the loss tests: seeded unit-norm inputs and value + gradient comparison with a reference."""

import torch
import torch.nn.functional as F

DTYPES = [torch.float32, torch.float64]
# against a float64 reference: float32 to single precision; float64 nearly exact
TOL = {torch.float64: dict(rtol=1e-9, atol=1e-10), torch.float32: dict(rtol=2e-4, atol=2e-5)}


def unit(n, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1).to(dtype)


def value_and_grad(fn, z):
    z = z.detach().clone().requires_grad_(True)
    value = fn(z)
    (grad,) = torch.autograd.grad(value, z)
    return value, grad


def assert_matches(fn, ref, z, dtype):
    """``fn`` on ``z`` in ``dtype`` equals the float64 reference ``ref`` in value and gradient."""
    value, grad = value_and_grad(fn, z.to(dtype))
    ref_value, ref_grad = value_and_grad(ref, z.double())
    assert value.dtype == dtype
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(value.double(), ref_value, **TOL[dtype])
    scale = max(1.0, float(ref_grad.abs().max()))
    torch.testing.assert_close(grad.double() / scale, ref_grad / scale, **TOL[dtype])
