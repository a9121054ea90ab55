"""Shared pieces of the benchmark suite run by ``benchmarks/run.py``: cases, timing, checks.

A *kernel family* is a module ``benchmarks/kernels/<name>.py`` with a function
``cases(smoke: bool, device: torch.device) -> list[Case]``. Each :class:`Case` pairs a
zero-argument callable of ours with the peer's (the library a user would otherwise pick); the
runner checks that their results agree within ``atol`` *before* timing anything, then times
both, interleaved, with ``torch.utils.benchmark.Timer``.

Peers are optional: a family imports them with :func:`optional_import` and, when one is missing,
returns its cases with ``skip`` set to the reason, so that the smoke run (tests, CI) skips them
instead of failing.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any, Callable

import torch
import torch.utils.benchmark as tb

#: What to install to get every peer (the ``bench`` extra of pyproject.toml).
INSTALL_HINT = "pip install -e '.[bench]'"


@dataclasses.dataclass
class Case:
    """One timed comparison of our kernel against a peer.

    ``ours`` and ``peer`` take no arguments and return a tensor or a tuple of tensors (the
    forward output, and for a backward case also the input gradient). ``ratio`` is
    ``peer time / our time``, so a ratio above 1 means ours is faster; the target is met when
    ``ratio >= target``.

    Correctness: if ``reference`` is None, every returned tensor of ours must be within ``atol``
    (max abs difference) of the peer's. If ``reference`` is given (e.g. a float64 solution),
    ours must be within ``atol`` of it, and the peer's error against it is recorded too.

    ``bytes_min`` is the fewest bytes the operation must move (read inputs, write outputs); with
    the measured copy bandwidth it gives the bandwidth floor ``bytes_min / bandwidth``.
    """

    family: str
    name: str
    ours: Callable[[], Any] | None
    peer: Callable[[], Any] | None
    peer_name: str
    atol: float = 1e-6
    target: float | None = 1.0
    reference: Callable[[], Any] | None = None
    bytes_min: int | None = None
    info: dict = dataclasses.field(default_factory=dict)
    describe: Callable[[Any], dict] | None = None   # extra facts from our output (e.g. support size)
    skip: str | None = None          # reason this case cannot run (e.g. peer not installed)


def optional_import(name: str):
    """Import a peer package, or return None if it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def missing_peer(package: str, pip_name: str) -> str:
    return f"peer package {package!r} not installed ({pip_name}; {INSTALL_HINT})"


def _as_tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def max_abs_diff(a, b) -> float:
    """Largest |a - b| over all tensors of two results (computed in float64)."""
    a, b = _as_tuple(a), _as_tuple(b)
    if len(a) != len(b):
        raise ValueError(f"results have {len(a)} and {len(b)} tensors")
    worst = 0.0
    for u, v in zip(a, b):
        if u.shape != v.shape:
            raise ValueError(f"shape mismatch {tuple(u.shape)} vs {tuple(v.shape)}")
        d = (u.detach().double() - v.detach().double()).abs().max().item()
        worst = max(worst, d if not math.isnan(d) else math.inf)
    return worst


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pair(fns: dict[str, Callable[[], Any]], *, rounds: int, min_run_time: float,
              smoke: bool) -> dict[str, dict]:
    """Time several callables, interleaved: ``rounds`` x (each callable once).

    Each callable is called once for warm-up first. A full run uses ``blocked_autorange``
    (blocks of repeated calls until ``min_run_time`` seconds) per round and pools the per-call
    times of all blocks of all rounds; interleaving the callables spreads any drift in the
    machine's load over all of them. A smoke run times one call each. Returns, per name, the
    median, the quartiles and the number of measurements (seconds).
    """
    for fn in fns.values():
        fn()                                       # warm-up (allocations, lazy init)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            timer = tb.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
            if smoke:
                times[key] += timer.timeit(1).times
            else:
                times[key] += timer.blocked_autorange(min_run_time=min_run_time).times
    out = {}
    for key, ts in times.items():
        t = torch.tensor(ts, dtype=torch.float64)
        q = torch.quantile(t, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
        out[key] = {"median_s": q[1], "q25_s": q[0], "q75_s": q[2], "n": len(ts)}
    return out
