"""The CNF's divergence from 3N − 6 directions and the score's equation of motion, against full traces."""

import pytest
import torch

from conftest import TOLERANCE
from opforce_tutorial.kernels.cnf import EGNNConfig, EGNNVectorField
from opforce_tutorial.kernels.coupling import random_rotations
from opforce_tutorial.kernels.divergence import (exact_divergence, internal_directions, internal_divergence,
                                                 rotation_directions, rotation_trace, score_rhs)


def _field(n, dtype, device):
    torch.manual_seed(n)
    return EGNNVectorField(EGNNConfig(bead_types=[i % 3 for i in range(n)], hidden=16, n_layers=3)).to(device, dtype)


def _frames(n, dtype, device, b=3, seed=0):
    x = 3.8 * torch.randn(b, n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return (x - x.mean(dim=1, keepdim=True)).to(device, dtype)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_internal_directions_are_orthonormal_and_orthogonal_to_rigid_motions(n):
    x = _frames(n, torch.float64, "cpu")
    u = internal_directions(x).flatten(2)  # (B, 3N − 6, 3N)
    eye = torch.eye(3 * n - 6, dtype=torch.float64)
    assert u.shape == (3, 3 * n - 6, 3 * n)
    assert torch.allclose(u @ u.transpose(1, 2), eye.expand(3, -1, -1), atol=1e-12)
    rigid = torch.cat([torch.eye(3, dtype=torch.float64).repeat(1, n).expand(3, 3, 3 * n),
                       rotation_directions(x).flatten(2)], dim=1)
    assert (u @ rigid.transpose(1, 2)).abs().max() < 1e-12


def test_rotation_trace_of_a_uniform_expansion_is_three_times_its_rate():
    """v = λ x̃ has J = λ(I − translations): each rotation direction gives λ, so tr(G⁻¹M) = 3λ."""
    x = _frames(6, torch.float64, "cpu", b=2)
    assert torch.allclose(rotation_trace(x + 1.5, 0.7 * x), torch.full((2,), 2.1, dtype=torch.float64))


@pytest.mark.parametrize("n", [3, 5, 10])
def test_internal_divergence_equals_the_full_trace(n, dtype, device):
    field = _field(n, dtype, device)
    x = _frames(n, dtype, device)
    v, div = exact_divergence(field, 0.4, x)
    v2, div2 = internal_divergence(field, 0.4, x)
    assert torch.allclose(v, v2)
    assert torch.allclose(div2, div, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * div.abs().max())


@pytest.mark.parametrize("n", [2, 5, 10])
def test_score_rhs_is_minus_jacobian_transpose_score_minus_divergence_gradient(n, dtype, device):
    field = _field(n, dtype, device)
    x = _frames(n, dtype, device, seed=1)
    s = _frames(n, dtype, device, seed=2) / 3.8
    xg = x.clone().requires_grad_(True)
    v, div = exact_divergence(field, 0.6, xg)  # full trace, differentiable
    (g,) = torch.autograd.grad(div.sum() + (v * s).sum(), xg)
    scale = TOLERANCE[dtype] * g.abs().max()
    for group in (None, 1, 4):  # directions per backward pass: memory, not the result
        v2, ds = score_rhs(field, 0.6, x, s, group_size=group)
        assert torch.allclose(ds, -g, rtol=TOLERANCE[dtype], atol=scale), group
    assert torch.allclose(ds.sum(dim=1), torch.zeros_like(ds[:, 0]), atol=scale)  # translations carry no score


def test_score_rhs_rotates_with_the_frame():
    field = _field(5, torch.float64, "cpu")
    x, s = _frames(5, torch.float64, "cpu"), _frames(5, torch.float64, "cpu", seed=3) / 3.8
    r = random_rotations(3, torch.float64, generator=torch.Generator().manual_seed(0))
    _, ds = score_rhs(field, 0.2, x, s)
    _, ds_r = score_rhs(field, 0.2, x @ r.transpose(1, 2), s @ r.transpose(1, 2))
    assert torch.allclose(ds_r, ds @ r.transpose(1, 2), atol=1e-10)
