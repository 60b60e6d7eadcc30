"""Exact divergence of a CNF vector field on frames (B, N, 3), and the score's equation of motion.

Full trace. ``exact_divergence`` takes all 3N rows of the Jacobian J = ∂v/∂x from one batched backward
pass; ``loop_divergence`` takes them one backward pass at a time (the reference).

Only 3N − 6 directions. If v is translation-invariant, v(x + 1⊗a) = v(x), and rotation-equivariant,
v(Rx) = R v(x), the Jacobian is known in closed form on six directions:

* translations T_a = 1⊗e_a/√N: J T_a = 0, so they add nothing to the trace;
* rotations r_k = Ω_k x̃ (bead i moved by e_k × (x_i − x̄), x̃ the centred frame): differentiating
  v(exp(θΩ_k) x) = exp(θΩ_k) v(x) at θ = 0 gives J r_k = Ω_k v (bead i: e_k × v_i).

Split the identity into the projector P onto span(T, r) and its complement. Since tr(J P_T) = 0,
tr J = tr(G⁻¹ M) + tr((BᵀB)⁻¹ BᵀJB), where G_jk = r_j·r_k is the inertia tensor Σ_i(|x̃_i|² δ_jk − x̃_ij x̃_ik),
M_jk = r_j·(J r_k) = r_j·(Ω_k v) needs only v, and the columns of B span the 3N − 6 internal directions.
The second term takes 3N − 6 vector-Jacobian products instead of 3N.

For the gradient of the trace (the score equation needs ∇_x div v) the basis must follow x. At the
point x₀ take an orthonormal basis U of the internal directions (held fixed) and B(x) = (I − P(x)) U,
with P(x) built from the rotations of x. At x₀, B = U and d(BᵀB) = −Uᵀ dP U = 0 (from P² = P, dP maps
the complement of span P into span P, to which U is orthogonal), so tr(BᵀJB) has the value *and* the gradient of
tr((BᵀB)⁻¹BᵀJB) there: autograd through B(x) gives ∇_x tr J exactly. Frames whose beads are collinear
have no full rotation set (G singular); molecular frames with N ≥ 3 are not collinear, and N < 3
falls back to the full trace.

Score along the flow. For dx/dt = v(t, x) carrying a density p_t, the score s = ∇_x log p_t(x(t))
obeys ds/dt = −Jᵀ s − ∇_x(∇·v) (differentiate log p_t(x(t)) = log p₀(x(0)) − ∫ ∇·v dt with respect to
x(0), with d/dt ∂x(t)/∂x(0) = J ∂x(t)/∂x(0)). ``score_rhs`` gives v and ds/dt with one backward pass for Jᵀs
and the rotation term, plus one double backward per group of internal directions.
"""

from __future__ import annotations

import torch


def exact_divergence(field, t, x: torch.Tensor):
    """(v, div v) at (t, x) for a batch (B, N, 3): the trace of the full 3N×3N Jacobian per frame.

    One forward pass, then all 3N Jacobian rows from one batched backward pass: ``autograd.grad`` with
    the 3N one-hot cotangents and ``is_grads_batched`` (vmap over the cotangents), not a Python loop
    over dimensions. Row k of frame b is ∂v_{b,k}/∂x_b, so div v_b = Σ_k rows[k, b, k]. When ``x``
    requires grad (labels differentiate through the solver) the result is differentiable; otherwise
    it is detached.
    """
    differentiable = x.requires_grad and torch.is_grad_enabled()
    with torch.enable_grad():
        xg = x if differentiable else x.detach().requires_grad_(True)
        v = field(t, xg)
        n = v[0].numel()
        basis = torch.eye(n, dtype=x.dtype, device=x.device).reshape(n, 1, *v.shape[1:]).expand(n, *v.shape)
        (rows,) = torch.autograd.grad(v, xg, grad_outputs=basis, is_grads_batched=True, create_graph=differentiable)
    div = rows.reshape(n, len(x), n).diagonal(dim1=0, dim2=2).sum(-1)
    return (v, div) if differentiable else (v.detach(), div.detach())


def loop_divergence(field, t, x: torch.Tensor):
    """Reference implementation: one backward pass per dimension (3N passes). For tests and benchmarks."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        v = field(t, x)
        flat = v.reshape(len(x), -1)
        div = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for i in range(flat.shape[1]):
            (g,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)
            div = div + g.reshape(len(x), -1)[:, i]
    return v.detach(), div.detach()


def rotation_directions(u: torch.Tensor) -> torch.Tensor:
    """Ω_k u for k = x, y, z: bead i moved by e_k × u_i. (B, N, 3) → (B, 3, N, 3)."""
    ux, uy, uz = u.unbind(-1)
    zero = torch.zeros_like(ux)
    return torch.stack([torch.stack([zero, -uz, uy], -1),
                        torch.stack([uz, zero, -ux], -1),
                        torch.stack([-uy, ux, zero], -1)], dim=1)


def internal_directions(x: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis of the 3N − 6 directions orthogonal to translations and rotations at x.

    (B, N, 3) → (B, 3N − 6, N, 3), detached (the complement of a complete QR of the six rigid-motion
    directions).
    """
    b, n, _ = x.shape
    with torch.no_grad():
        xc = x - x.mean(dim=1, keepdim=True)
        trans = torch.eye(3, dtype=x.dtype, device=x.device).expand(b, n, 3, 3).transpose(1, 2) / n**0.5
        rigid = torch.cat([trans, rotation_directions(xc)], dim=1).reshape(b, 6, 3 * n)
        q, _ = torch.linalg.qr(rigid.transpose(1, 2), mode="complete")  # (B, 3N, 3N)
        return q[:, :, 6:].transpose(1, 2).reshape(b, 3 * n - 6, n, 3)


def rotation_trace(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """tr(G⁻¹ M): the part of tr ∂v/∂x on the rotations of x, from v alone (module docstring). (B,)"""
    r = rotation_directions(x - x.mean(dim=1, keepdim=True))
    gram = torch.einsum("bjni,bkni->bjk", r, r)
    m = torch.einsum("bjni,bkni->bjk", r, rotation_directions(v))
    return torch.linalg.solve(gram, m).diagonal(dim1=1, dim2=2).sum(-1)


def _internal_cotangents(x: torch.Tensor) -> torch.Tensor:
    """B(x) = (I − P(x)) U with U the internal basis at x (fixed) and P following x; (3N − 6, B, N, 3)."""
    u = internal_directions(x)
    r = rotation_directions(x - x.mean(dim=1, keepdim=True))
    gram = torch.einsum("bjni,bkni->bjk", r, r)
    coef = torch.linalg.solve(gram, torch.einsum("bkni,bmni->bkm", r, u))
    return (u - torch.einsum("bkni,bkm->bmni", r, coef)).transpose(0, 1)


def internal_divergence(field, t, x: torch.Tensor, group_size: int | None = None):
    """(v, div v) from the 3N − 6 internal directions and the closed-form rotation term (detached).

    The same numbers as :func:`exact_divergence` (to rounding) for any translation-invariant,
    rotation-equivariant field; ``group_size`` internal directions per backward pass (all by default).
    """
    x = x.detach()
    with torch.no_grad():
        v, div, _ = _score_terms(field, t, x, None, group_size)
    return v, div


def score_rhs(field, t, x: torch.Tensor, s: torch.Tensor, group_size: int | None = None):
    """(v, ds/dt) with ds/dt = −Jᵀ s − ∇_x(∇·v) at (t, x), detached (see the module docstring).

    ``group_size`` bounds memory: that many internal directions share one double-backward pass
    (all 3N − 6 by default); the passes are summed, so the result does not depend on it.
    """
    v, _, ds = _score_terms(field, t, x.detach(), s.detach(), group_size)
    return v, ds


def _score_terms(field, t, x, s, group_size):
    """v, div v and (if ``s`` is given) ds/dt at x, all detached."""
    n_beads = x.shape[1]
    with_grad = s is not None
    with torch.enable_grad():
        xg = x.requires_grad_(True)
        v = field(t, xg)
        if n_beads < 3:  # no rotation set: the full trace (and its gradient)
            _, div = exact_divergence(field, t, xg) if with_grad else exact_divergence(field, t, xg.detach())
            if not with_grad:
                return v.detach(), div.detach(), None
            (g,) = torch.autograd.grad(div.sum() + (v * s).sum(), xg)
            return v.detach(), div.detach(), -g
        cot = _internal_cotangents(xg) if with_grad else internal_directions(xg).transpose(0, 1)
        rot = rotation_trace(xg, v)
        groups = torch.split(torch.arange(len(cot), device=x.device), group_size or len(cot))
        div = rot.detach().clone()
        grad = torch.zeros_like(x)
        for i, idx in enumerate(groups):
            c = cot[idx]
            (w,) = torch.autograd.grad(v, xg, grad_outputs=c, is_grads_batched=True, create_graph=with_grad,
                                       retain_graph=True)
            part = (w * c).sum(dim=(0, 2, 3))
            div = div + part.detach()
            if with_grad:
                last = i == len(groups) - 1
                objective = part.sum() + ((rot.sum() + (v * s).sum()) if last else 0.0)
                (g,) = torch.autograd.grad(objective, xg, retain_graph=not last)
                grad = grad + g
    return v.detach(), div, (-grad if with_grad else None)
