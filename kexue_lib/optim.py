"""Sign-based optimizers: Lion (P06), Tiger and SIGNUM (P22), as ``torch.optim.Optimizer`` classes.

All three update a parameter by the *sign* of a momentum-like quantity, so every coordinate
moves by exactly the learning rate (plus decoupled weight decay):

* **Lion** (Chen et al., arXiv:2302.06675; Derived in P06)::

      u_t     = sign(beta1 * m_{t-1} + (1 - beta1) * g_t)
      theta_t = theta_{t-1} - lr * (u_t + weight_decay * theta_{t-1})
      m_t     = beta2 * m_{t-1} + (1 - beta2) * g_t

* **Tiger** (Su, kexue.fm/archives/9512; Derived in P22) is Lion with ``beta1 = beta2 = beta``,
  i.e. the sign of the *refreshed* momentum, plus a per-tensor learning rate
  ``lr * RMS(theta)``, gradient accumulation folded into the momentum (no extra buffer) and a
  skip-and-shrink rule for non-finite gradients.
* **Signum** (Bernstein et al., arXiv:1802.04434): ``m_t = beta m_{t-1} + (1 - beta) g_t``,
  ``theta_t = theta_{t-1} - lr sign(m_t)``; Tiger without the extras.

Implementation notes (performance). The update is written with PyTorch's multi-tensor
``torch._foreach_*`` ops (``lerp``, ``sign``, ``mul``, ``add``), grouped by device and dtype,
so there is no per-parameter Python arithmetic and never any per-element Python. On CUDA the
whole group goes to the fused multi-tensor kernels in one call per op. On the CPU the same
ops are applied to cache-sized blocks (``CPU_BLOCK`` elements; big tensors are split into
flat views), so the temporary ``sign`` buffer stays in cache and memory traffic is close to
the compulsory 5 words per parameter (read ``theta``, ``g``, ``m``; write ``theta``, ``m``),
i.e. ~20 bytes per float32 parameter. ``foreach=False`` replaces each multi-tensor call by a
per-tensor loop over the same blocks, so the two paths agree bit for bit (tested).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from ._checks import check_int, check_real

__all__ = ["Lion", "Tiger", "Signum", "tiger_param_groups", "CPU_BLOCK"]

#: Elements per block when the foreach path runs on the CPU (128 kB of float32), small enough
#: for the temporaries to stay in cache and large enough to amortise the per-call overhead.
CPU_BLOCK: int = 1 << 15


# --------------------------------------------------------------------------------------- helpers
def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _check_foreach(value: object) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"foreach must be a bool or None, got {type(value).__name__}")
    return value


def _check_beta(value: object, name: str) -> float:
    return check_real(value, name, ge=0.0, le=1.0)


def _block_size(device: torch.device) -> int | None:
    """Block length for the foreach path: ``CPU_BLOCK`` on the CPU, whole lists elsewhere."""
    return CPU_BLOCK if device.type == "cpu" else None


def _blocks(split: Sequence[list[Tensor]], carry: Sequence[list[Any]], block: int | None
            ) -> Iterator[tuple[list[list[Tensor]], list[list[Any]]]]:
    """Yield ``(split_lists, carried_lists)`` batches of about ``block`` elements.

    ``split`` holds parallel lists of same-shaped tensors; a big contiguous entry is cut into
    flat views of ``block`` elements, and the matching entries of the ``carry`` lists (e.g. a
    per-tensor learning rate) are repeated for every piece. ``block=None`` yields everything
    as one batch (the fused multi-tensor kernels on CUDA need no blocking).
    """
    if block is None:
        yield [list(s) for s in split], [list(c) for c in carry]
        return
    cur: list[list[Tensor]] = [[] for _ in split]
    cur_c: list[list[Any]] = [[] for _ in carry]
    size = 0
    for i in range(len(split[0])):
        ts = [s[i] for s in split]
        n = ts[0].numel()
        if n > block and all(t.is_contiguous() for t in ts):
            pieces = [t.view(-1).split(block) for t in ts]
        else:
            pieces = [(t,) for t in ts]
        for j in range(len(pieces[0])):
            for c, pc in zip(cur, pieces):
                c.append(pc[j])
            for c, src in zip(cur_c, carry):
                c.append(src[i])
            size += pieces[0][j].numel()
            if size >= block:
                yield cur, cur_c
                cur, cur_c, size = [[] for _ in split], [[] for _ in carry], 0
    if cur[0]:
        yield cur, cur_c


class _Ops:
    """Elementwise ops on lists of tensors: multi-tensor ``torch._foreach_*`` or a per-tensor loop.

    Both modes see the same blocks (see ``_blocks``), so both run the same kernels on the same
    memory ranges and agree bit for bit (a kernel's vectorised and scalar tails may round
    differently, so the blocking must not differ between the two modes).
    """

    def __init__(self, foreach: bool) -> None:
        self.foreach = foreach

    def add_(self, xs: list[Tensor], ys: list[Tensor], alpha: float) -> None:
        if self.foreach:
            torch._foreach_add_(xs, ys, alpha=alpha)
        else:
            for x, y in zip(xs, ys):
                x.add_(y, alpha=alpha)

    def mul_(self, xs: list[Tensor], scalars: list[Tensor]) -> None:
        if self.foreach:
            torch._foreach_mul_(xs, scalars)
        else:
            for x, c in zip(xs, scalars):
                x.mul_(c)

    def lerp_(self, xs: list[Tensor], ys: list[Tensor], weight: float) -> None:
        if self.foreach:
            torch._foreach_lerp_(xs, ys, weight)
        else:
            for x, y in zip(xs, ys):
                x.lerp_(y, weight)

    def lerp(self, xs: list[Tensor], ys: list[Tensor], weight: float) -> list[Tensor]:
        if self.foreach:
            return list(torch._foreach_lerp(xs, ys, weight))
        return [torch.lerp(x, y, weight) for x, y in zip(xs, ys)]

    def sign_(self, xs: list[Tensor]) -> None:
        if self.foreach:
            torch._foreach_sign_(xs)
        else:
            for x in xs:
                x.sign_()

    def sign(self, xs: list[Tensor]) -> list[Tensor]:
        if self.foreach:
            return list(torch._foreach_sign(xs))
        return [torch.sign(x) for x in xs]

    def neg(self, xs: list[Tensor]) -> list[Tensor]:
        if self.foreach:
            return list(torch._foreach_neg(xs))
        return [torch.neg(x) for x in xs]


def _finite_flags(gs: list[Tensor]) -> list[bool]:
    """Whether each gradient is free of NaN/inf: one sum each (NaN/inf propagate), one sync per device.

    A sum is the cheapest full reduction; it could only flag a finite gradient whose sum
    overflows float32 (entries near 1e38), which is no loss. Half types are summed in float32.
    """
    sums = [g.sum(dtype=torch.float32) if g.dtype in (torch.float16, torch.bfloat16) else g.sum() for g in gs]
    by_dev: dict[torch.device, list[int]] = {}
    for i, s in enumerate(sums):
        by_dev.setdefault(s.device, []).append(i)
    flags = [True] * len(gs)
    for idx in by_dev.values():
        for i, ok in zip(idx, torch.isfinite(torch.stack([sums[i] for i in idx])).tolist()):
            flags[i] = ok
    return flags


class _SignOptimizer(torch.optim.Optimizer):
    """Shared plumbing: parameter checks, gradient gathering, device/dtype grouping."""

    _name = "optimizer"

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if isinstance(p, Tensor) and p.is_complex():
                raise TypeError(
                    f"params: {self._name} does not support complex parameters (sign is undefined "
                    "for complex numbers); optimise torch.view_as_real(p) instead")
            if isinstance(p, Tensor) and not p.is_floating_point():
                raise TypeError(f"params: {self._name} needs floating-point parameters, got {p.dtype}")
        super().add_param_group(param_group)

    def _use_foreach(self, group: dict[str, Any]) -> bool:
        return True if group["foreach"] is None else group["foreach"]

    def _grads(self, group: dict[str, Any], index: int) -> tuple[list[Tensor], list[Tensor]]:
        """Parameters of ``group`` that have a (dense, non-empty) gradient, and the gradients."""
        ps, gs = [], []
        for j, p in enumerate(group["params"]):
            g = p.grad
            if g is None or p.numel() == 0:
                continue
            if g.is_sparse:
                raise TypeError(f"{self._name} does not support sparse gradients "
                                f"(param group {index}, parameter {j}); use a dense gradient")
            ps.append(p)
            gs.append(g)
        return ps, gs

    @staticmethod
    def _by_device_dtype(*lists: list[Any]) -> dict[tuple[torch.device, torch.dtype], list[list[Any]]]:
        """Split parallel lists (the first holds parameters) by the parameters' (device, dtype)."""
        out: dict[tuple[torch.device, torch.dtype], list[list[Any]]] = {}
        for items in zip(*lists):
            key = (items[0].device, items[0].dtype)
            bucket = out.setdefault(key, [[] for _ in lists])
            for b, x in zip(bucket, items):
                b.append(x)
        return out


# ------------------------------------------------------------------------------------------ Lion
class Lion(_SignOptimizer):
    r"""Lion, "EvoLved Sign Momentum" (Chen et al., arXiv:2302.06675; Derived in P06).

    .. math::

        u_t = \operatorname{sign}\big(\beta_1 m_{t-1} + (1-\beta_1) g_t\big),\quad
        \theta_t = \theta_{t-1} - \eta\,(u_t + \lambda\,\theta_{t-1}),\quad
        m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t .

    The update uses the *old* momentum with ``beta1``; the momentum is refreshed afterwards
    with ``beta2``. With ``beta1 == beta2`` and ``weight_decay = 0`` it is SIGNUM. Each
    coordinate moves by exactly ``lr`` (``torch.sign(0) = 0``: a coordinate whose
    interpolated momentum is exactly zero does not move), so ``lr`` should be 3-10x smaller
    than AdamW's and ``weight_decay`` correspondingly larger. One state tensor per parameter,
    ``state["exp_avg"]`` (AdamW keeps two).

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: learning rate ``eta >= 0`` (default ``1e-4``).
        betas: ``(beta1, beta2)``, each in ``[0, 1]`` (default ``(0.9, 0.99)``, the searched
            values; the paper uses ``(0.95, 0.98)`` for language models).
        weight_decay: decoupled decay ``lambda >= 0``; the parameter is multiplied by
            ``1 - lr * weight_decay`` each step, as in ``torch.optim.AdamW``.
        maximize: maximise the objective instead of minimising it.
        foreach: ``None``/``True`` multi-tensor ``torch._foreach_*`` path (blocked on CPU),
            ``False`` per-tensor loop over the same blocks. Both give identical results.

    Shapes: parameters of any shape, float16/bfloat16/float32/float64, any device. Sparse
    gradients and complex parameters raise ``TypeError``.
    """

    _name = "Lion"

    def __init__(self, params: Iterable[Any], lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, *, maximize: bool = False, foreach: bool | None = None) -> None:
        lr = check_real(lr, "lr", ge=0.0)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        betas = (_check_beta(betas[0], "betas[0]"), _check_beta(betas[1], "betas[1]"))
        weight_decay = check_real(weight_decay, "weight_decay", ge=0.0)
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay,
                        maximize=_check_bool(maximize, "maximize"), foreach=_check_foreach(foreach))
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one Lion step; ``closure`` (optional) re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            ps, gs = self._grads(group, index)
            if not ps:
                continue
            ms = []
            for p in ps:
                state = self.state[p]
                if len(state) == 0:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                ms.append(state["exp_avg"])
            beta1, beta2 = group["betas"]
            args = (group["lr"], beta1, beta2, group["weight_decay"], group["maximize"])
            ops = _Ops(self._use_foreach(group))
            for (dev, _), (p_, g_, m_) in self._by_device_dtype(ps, gs, ms).items():
                _lion_update(ops, p_, g_, m_, *args, block=_block_size(dev))
        return loss


def _lion_update(ops: _Ops, ps: list[Tensor], gs: list[Tensor], ms: list[Tensor], lr: float, beta1: float,
                 beta2: float, wd: float, maximize: bool, *, block: int | None) -> None:
    for (p, g, m), _ in _blocks((ps, gs, ms), (), block):
        if maximize:
            g = ops.neg(g)
        if wd != 0.0:
            ops.add_(p, p, -lr * wd)               # decoupled decay theta -= lr wd theta_{t-1}
        u = ops.lerp(g, m, beta1)                  # beta1 m + (1 - beta1) g ...
        ops.sign_(u)                               # ... its sign
        ops.add_(p, u, -lr)
        ops.lerp_(m, g, 1.0 - beta2)               # m <- beta2 m + (1 - beta2) g


# ----------------------------------------------------------------------------------------- Tiger
class Tiger(_SignOptimizer):
    r"""Tiger, the "tight-fisted optimizer" (Su, kexue.fm/archives/9512; Derived in P22).

    .. math::

        m_t = \beta m_{t-1} + (1-\beta) g_t,\qquad
        \theta_t = \theta_{t-1} - \eta_t\,\big(\operatorname{sign}(m_t) + \lambda\,\theta_{t-1}\big),

    i.e. Lion with ``beta1 = beta2 = beta`` (bit for bit when ``scale_by_rms=False``), with:

    * **Scale-aware learning rate.** With ``scale_by_rms=True`` (default) the step of a tensor
      is ``eta_t = lr * RMS(theta_{t-1})``, ``RMS(x) = ||x||_2 / sqrt(numel)``, so ``lr`` is a
      *relative* learning rate ``alpha_t``: with ``weight_decay = 0`` and no zero entries in
      ``m``, ``||theta_t - theta_{t-1}|| = alpha_t ||theta_{t-1}||`` exactly. The post uses
      ``scale_by_rms=False`` with ``lr = alpha_t / 2`` and no decay for biases and
      normalisation parameters: see ``tiger_param_groups``. (A tensor that is all zeros
      never moves under ``scale_by_rms=True``.)
    * **Built-in gradient accumulation.** With ``grad_accum_steps = k``, call ``step()``
      after every micro-batch. At the first micro-step of each window of ``k`` the momentum
      is decayed by ``beta``; every micro-gradient is added with weight ``(1 - beta) / k``;
      the parameters move only at the last micro-step. This equals averaging the ``k``
      gradients and taking one Tiger step, without an accumulation buffer (so ``p.grad`` may
      be freed after each micro-step). The micro-step counter is ``group["step"]``.
    * **Skip and shrink on non-finite gradients.** With ``nan_shrink = s`` (default 0.99), a
      parameter whose gradient has a NaN or inf leaves its momentum untouched and is shrunk
      towards its initialisation centre ``c = nan_center``: ``theta <- (theta - c) s + c``.
      (The post's rule is stated for NaN; inf is treated the same.) This costs one extra read
      of the gradients and one host synchronisation per step; ``nan_shrink=None`` disables it.

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: relative learning rate ``alpha_t`` (``scale_by_rms=True``) or absolute step
            (``False``); ``>= 0``, default ``1e-3`` (the post: peak in ``[0.001, 0.002]``).
        beta: momentum rate in ``[0, 1)`` (default 0.965 for NLP; 0.945 for vision).
        weight_decay: decoupled decay ``lambda >= 0`` (default 0.01), scaled by ``eta_t``.
        grad_accum_steps: micro-batches per update ``k >= 1``.
        nan_shrink: shrink factor ``s`` in ``(0, 1]`` or ``None`` (no guard).
        nan_center: initialisation centre ``c`` (1 for LayerNorm gains, 0 otherwise).
        scale_by_rms: multiply ``lr`` by ``RMS(theta)``.
        maximize: maximise the objective instead of minimising it.
        foreach: ``None``/``True`` multi-tensor path, ``False`` per-tensor loop.

    State: ``state["exp_avg"]`` (one buffer per parameter) and ``state["window"]`` (the
    accumulation window the momentum was last decayed in).
    """

    _name = "Tiger"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, beta: float = 0.965,
                 weight_decay: float = 0.01, *, grad_accum_steps: int = 1, nan_shrink: float | None = 0.99,
                 nan_center: float = 0.0, scale_by_rms: bool = True, maximize: bool = False,
                 foreach: bool | None = None) -> None:
        defaults = self._validate(dict(
            lr=lr, beta=beta, weight_decay=weight_decay, grad_accum_steps=grad_accum_steps,
            nan_shrink=nan_shrink, nan_center=nan_center, scale_by_rms=scale_by_rms,
            maximize=maximize, foreach=foreach))
        super().__init__(params, defaults)

    @staticmethod
    def _validate(d: dict[str, Any]) -> dict[str, Any]:
        d["lr"] = check_real(d["lr"], "lr", ge=0.0)
        d["beta"] = check_real(d["beta"], "beta", ge=0.0, lt=1.0)
        d["weight_decay"] = check_real(d["weight_decay"], "weight_decay", ge=0.0)
        d["grad_accum_steps"] = check_int(d["grad_accum_steps"], "grad_accum_steps", ge=1)
        if d["nan_shrink"] is not None:
            d["nan_shrink"] = check_real(d["nan_shrink"], "nan_shrink", gt=0.0, le=1.0)
        d["nan_center"] = check_real(d["nan_center"], "nan_center")
        d["scale_by_rms"] = _check_bool(d["scale_by_rms"], "scale_by_rms")
        d["maximize"] = _check_bool(d["maximize"], "maximize")
        d["foreach"] = _check_foreach(d["foreach"])
        return d

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        # Validate per-group overrides too (e.g. from tiger_param_groups), then align the
        # micro-step counter with the existing groups so accumulation windows stay in step.
        if hasattr(self, "defaults"):
            merged = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
            merged.pop("step", None)
            checked = self._validate(merged)
            param_group.update({k: checked[k] for k in checked if k in param_group})
        param_group.setdefault("step", self.param_groups[0]["step"] if self.param_groups else 0)
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one Tiger micro-step (an update every ``grad_accum_steps`` calls)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            self._group_step(group, index)
        return loss

    def _group_step(self, group: dict[str, Any], index: int) -> None:
        k, beta = group["grad_accum_steps"], group["beta"]
        t = group["step"] + 1
        group["step"] = t
        window, update = (t - 1) // k, t % k == 0
        ps, gs = self._grads(group, index)
        for p in ps:
            state = self.state[p]
            if len(state) == 0:
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["window"] = -1
        # Skip-and-shrink guard: one reduction per gradient and one host sync per step.
        bad: list[Tensor] = []
        if group["nan_shrink"] is not None and gs:
            flags = _finite_flags(gs)
            if not all(flags):
                bad = [p for p, ok in zip(ps, flags) if not ok]
                ps = [p for p, ok in zip(ps, flags) if ok]
                gs = [g for g, ok in zip(gs, flags) if ok]
        if group["maximize"] and gs:
            gs = torch._foreach_neg(gs)      # a temporary copy; the user's .grad is left alone
        # Momentum: decay once per window (at the parameter's first gradient in it), add g (1-beta)/k.
        first = [self.state[p]["window"] != window for p in ps]
        for p in ps:
            self.state[p]["window"] = window
        ms = [self.state[p]["exp_avg"] for p in ps]
        ops = _Ops(self._use_foreach(group))
        if k == 1:
            _accumulate(ops, ms, gs, [], [], beta, 1)
        else:
            pick = lambda xs, flag: [x for x, f in zip(xs, first) if f == flag]  # noqa: E731
            _accumulate(ops, pick(ms, True), pick(gs, True), pick(ms, False), pick(gs, False), beta, k)
        # Parameter update at the end of the window, for every parameter that got a gradient in it.
        if update:
            bad_ids = {id(p) for p in bad}
            targets = [p for p in group["params"] if id(p) not in bad_ids and p.numel() > 0
                       and self.state.get(p, {}).get("window") == window]
            if targets:
                ms_t = [self.state[p]["exp_avg"] for p in targets]
                _tiger_update(ops, targets, ms_t, group["lr"], group["weight_decay"], group["scale_by_rms"])
        if bad:
            s, c = group["nan_shrink"], group["nan_center"]
            for p in bad:
                p.sub_(c).mul_(s).add_(c)


def _accumulate(ops: _Ops, m_first: list[Tensor], g_first: list[Tensor], m_rest: list[Tensor],
                g_rest: list[Tensor], beta: float, k: int) -> None:
    """Momentum accumulation: ``m <- beta m + (1-beta)/k g`` (first micro-step) or ``m += (1-beta)/k g``."""
    w = (1.0 - beta) / k
    for key, (m_, g_) in _SignOptimizer._by_device_dtype(m_first, g_first).items():
        for (m, g), _ in _blocks((m_, g_), (), _block_size(key[0])):
            if k == 1:
                ops.lerp_(m, g, 1.0 - beta)         # same rounding as Lion's momentum
            else:                                   # m <- beta m, written m + (beta - 1) m
                ops.add_(m, m, beta - 1.0)
                ops.add_(m, g, w)
    for key, (m_, g_) in _SignOptimizer._by_device_dtype(m_rest, g_rest).items():
        for (m, g), _ in _blocks((m_, g_), (), _block_size(key[0])):
            ops.add_(m, g, w)


def _rms_steps(ps: list[Tensor], lr: float) -> list[Tensor]:
    """``lr * RMS(p)`` for each tensor, as 0-d tensors (no host sync); float32 for half types."""
    low = ps[0].dtype in (torch.float16, torch.bfloat16)
    norms = torch._foreach_norm(ps, 2, dtype=torch.float32) if low else torch._foreach_norm(ps, 2)
    return torch._foreach_mul(norms, [lr / math.sqrt(p.numel()) for p in ps])


def _tiger_update(ops: _Ops, ps: list[Tensor], ms: list[Tensor], lr: float, wd: float, scale_by_rms: bool) -> None:
    """``theta <- theta - eta (sign(m) + wd theta)`` with ``eta = lr`` or ``lr * RMS(theta_{t-1})``."""
    for (dev, _), (p_, m_) in _SignOptimizer._by_device_dtype(ps, ms).items():
        if scale_by_rms:
            etas = _rms_steps(p_, lr)                                   # per tensor, before any change
            neg = torch._foreach_neg(etas)
            keep = torch._foreach_add(torch._foreach_mul(etas, -wd), 1.0) if wd != 0.0 else None
        for (p, m), (e,) in _blocks((p_, m_), (list(range(len(p_))),), _block_size(dev)):
            u = ops.sign(m)
            if not scale_by_rms:
                if wd != 0.0:
                    ops.add_(p, p, -lr * wd)
                ops.add_(p, u, -lr)
            else:
                if keep is not None:
                    ops.mul_(p, [keep[i] for i in e])                 # 1 - eta wd
                ops.mul_(u, [neg[i] for i in e])                      # -eta sign(m)
                ops.add_(p, u, 1.0)


class Signum(Tiger):
    r"""SIGNUM (Bernstein et al., arXiv:1802.04434; discussed in P06 and P22).

    .. math:: m_t = \beta m_{t-1} + (1-\beta) g_t,\qquad \theta_t = \theta_{t-1} - \eta\,\operatorname{sign}(m_t).

    Tiger with ``scale_by_rms=False``, no accumulation and no NaN guard; ``weight_decay``
    (decoupled, default 0) is kept for comparisons. Equals ``Lion(betas=(beta, beta))``.

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: step size ``eta >= 0``.
        beta: momentum rate in ``[0, 1)`` (default 0.9).
        weight_decay: decoupled decay ``>= 0``.
        maximize: maximise instead of minimise.
        foreach: ``None``/``True`` multi-tensor path, ``False`` per-tensor loop.
    """

    _name = "Signum"

    def __init__(self, params: Iterable[Any], lr: float = 1e-4, beta: float = 0.9, weight_decay: float = 0.0,
                 *, maximize: bool = False, foreach: bool | None = None) -> None:
        super().__init__(params, lr=lr, beta=beta, weight_decay=weight_decay, grad_accum_steps=1,
                         nan_shrink=None, scale_by_rms=False, maximize=maximize, foreach=foreach)


def tiger_param_groups(model: torch.nn.Module, *, lr: float = 1e-3, weight_decay: float = 0.01,
                       vector_lr_scale: float = 0.5) -> list[dict[str, Any]]:
    """Tiger parameter groups as the post prescribes (Derived in P22).

    * Kernels (``ndim >= 2``): ``lr`` relative to ``RMS(theta)``, decay ``weight_decay``.
    * Vectors (``ndim <= 1``: biases, normalisation gains/offsets): absolute step
      ``vector_lr_scale * lr`` (the post: ``alpha_t / 2``), no decay; gains (``...weight``
      vectors) shrink towards 1 under the NaN rule, biases towards 0.

    Returns a list of group dicts for ``Tiger(groups, ...)``; empty groups are dropped.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    lr = check_real(lr, "lr", ge=0.0)
    weight_decay = check_real(weight_decay, "weight_decay", ge=0.0)
    vector_lr_scale = check_real(vector_lr_scale, "vector_lr_scale", gt=0.0)
    kernels, gains, offsets = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim >= 2:
            kernels.append(p)
        elif name.endswith("weight"):
            gains.append(p)
        else:
            offsets.append(p)
    groups = [
        dict(params=kernels, lr=lr, weight_decay=weight_decay, scale_by_rms=True, nan_center=0.0),
        dict(params=gains, lr=vector_lr_scale * lr, weight_decay=0.0, scale_by_rms=False, nan_center=1.0),
        dict(params=offsets, lr=vector_lr_scale * lr, weight_decay=0.0, scale_by_rms=False, nan_center=0.0),
    ]
    return [g for g in groups if g["params"]]
