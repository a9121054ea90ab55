"""Sparsemax, entmax-1.5 and alpha-entmax (kexue_lib.sparsemax, P01) vs the ``entmax`` package.

Cases (issue 9):

* ``sparsemax`` and ``entmax15``, forward and forward+backward, at (4096, 1024) and
  (256, 32768), on *dense-support* logits (spread so small that every entry is in the support)
  and *very sparse* ones (``10 * randn``: one or two entries in the support). Peer:
  ``entmax.sparsemax`` / ``entmax.entmax15`` with their defaults (full sort). Target: ours at
  least as fast (ratio >= 1), outputs and input gradients within 1e-6.
* ``entmax_bisect`` (alpha = 1.5 and 1.25, forward) on ``randn`` logits. Accuracy is measured
  against a float64 solution (the peer's own bisection in float64 with 64 halvings); ours
  must be within 1e-6 of it. The peer runs twice: with its default ``n_iter=50``, and with the
  smallest ``n_iter`` whose output is within 1e-6 of the float64 solution (found on the same
  data), i.e. at the same accuracy as ours. Target: ours >= 2x faster. Ours gets there by
  replacing bisection with safeguarded Newton steps (quadratic convergence: typically 3-9
  iterations instead of ~20-25 halvings) and a per-batch early exit.

Bytes: a forward reads ``x`` and writes ``p`` (8 bytes per float32 entry); forward+backward
also reads the upstream gradient and the saved output and writes the input gradient (20 bytes).
"""
from __future__ import annotations

import torch

from harness import Case, missing_peer, optional_import

from kexue_lib import sparsemax as ks

FULL_SHAPES = [(4096, 1024), (256, 32768)]
SMOKE_SHAPES = [(4, 256)]
ATOL = 1e-6


def _inputs(shape, kind: str, fn: str, gen: torch.Generator, device) -> torch.Tensor:
    rows, n = shape
    x = torch.randn(rows, n, generator=gen)
    if kind == "dense":
        # every entry in the support: spread << 1/n (sparsemax) or << 1/sqrt(n) (entmax-1.5, x/2)
        x = x / (8 * n) if fn == "sparsemax" else x / (8 * n ** 0.5)
    else:
        x = 10 * x                                  # a max gap of O(1): support of 1-2 entries
    return x.to(device)


def _support(p: torch.Tensor) -> dict:
    p = p[0] if isinstance(p, tuple) else p
    k = (p > 0).sum(-1).double()
    return {"support_mean": round(k.mean().item(), 2), "support_min": int(k.min()), "support_max": int(k.max())}


def _fwd(f, x):
    def run():
        with torch.no_grad():
            return f(x)
    return run


def _fwd_bwd(f, x, g):
    xr = x.clone().requires_grad_(True)

    def run():
        xr.grad = None
        y = f(xr)
        y.backward(g)
        return y.detach(), xr.grad
    return run


def cases(smoke: bool, device: torch.device) -> list[Case]:
    entmax = optional_import("entmax")
    skip = None if entmax is not None else missing_peer("entmax", "entmax>=1.3,<2")
    gen = torch.Generator().manual_seed(0)
    out: list[Case] = []
    shapes = SMOKE_SHAPES if smoke else FULL_SHAPES
    maps = {
        "sparsemax": (ks.sparsemax, getattr(entmax, "sparsemax", None)),
        "entmax15": (ks.entmax15, getattr(entmax, "entmax15", None)),
    }
    for shape in shapes:
        numel = shape[0] * shape[1]
        for kind in ("dense", "sparse"):
            for fname, (ours, peer) in maps.items():
                x = _inputs(shape, kind, fname, gen, device)
                g = torch.randn(shape, generator=gen).to(device)
                tag = f"{fname} {shape[0]}x{shape[1]} {kind}"
                out.append(Case(
                    family="sparsemax", name=f"{tag} fwd",
                    ours=_fwd(ours, x), peer=None if skip else _fwd(peer, x),
                    peer_name=f"entmax.{fname}", atol=ATOL, target=1.0,
                    bytes_min=8 * numel, describe=_support, skip=skip))
                out.append(Case(
                    family="sparsemax", name=f"{tag} fwd+bwd",
                    ours=_fwd_bwd(ours, x, g), peer=None if skip else _fwd_bwd(peer, x, g),
                    peer_name=f"entmax.{fname}", atol=ATOL, target=1.0,
                    bytes_min=20 * numel, describe=_support, skip=skip))
    for shape in shapes:
        numel = shape[0] * shape[1]
        x = torch.randn(shape, generator=gen).to(device)
        for alpha in ((1.5,) if smoke else (1.5, 1.25)):
            tag = f"entmax_bisect a={alpha} {shape[0]}x{shape[1]}"
            ours = _fwd(lambda v, a=alpha: ks.entmax_bisect(v, alpha=a), x)

            def iters(out_, x=x, a=alpha):
                return {**_support(out_), "our_iterations": ks.entmax_bisect_threshold(x, alpha=a)[1]}

            if skip:
                out.append(Case(family="sparsemax", name=tag, ours=ours, peer=None,
                                peer_name="entmax.entmax_bisect", skip=skip))
                continue
            ref = _reference(entmax, x, alpha)
            n_same = _peer_iters_for(entmax, x, alpha, ref, ATOL)
            for n_iter, label in ((50, "default n_iter=50"), (n_same, f"n_iter={n_same}, same accuracy")):
                out.append(Case(
                    family="sparsemax", name=f"{tag} vs peer {label}",
                    ours=ours,
                    peer=_fwd(lambda v, a=alpha, k=n_iter: entmax.entmax_bisect(v, alpha=a, n_iter=k), x),
                    peer_name=f"entmax.entmax_bisect (n_iter={n_iter})", atol=ATOL, target=2.0,
                    reference=lambda r=ref: r, bytes_min=8 * numel, describe=iters,
                    info={"peer_n_iter": n_iter}))
    return out


def _reference(entmax, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Float64 alpha-entmax by the peer's bisection with 64 halvings (to float64 resolution)."""
    with torch.no_grad():
        return entmax.entmax_bisect(x.double(), alpha=alpha, n_iter=64)


def _peer_iters_for(entmax, x: torch.Tensor, alpha: float, ref: torch.Tensor, atol: float) -> int:
    """Smallest n_iter for which the peer's float32 output is within atol of ref (max 50)."""
    with torch.no_grad():
        for n_iter in range(12, 51):
            if (entmax.entmax_bisect(x, alpha=alpha, n_iter=n_iter) - ref).abs().max().item() <= atol:
                return n_iter
    return 50
