#!/usr/bin/env python3
"""Time and memory of causal attention evaluated as a recurrence (P30, kexue.fm/archives/10017).

Methods, all computing causal softmax attention of ``H`` heads of size ``d`` over ``n`` tokens
(except ``linear_rnn``, which is the constant-state alternative, and ``recompute``):

``sdpa``        ``torch.nn.functional.scaled_dot_product_attention(is_causal=True)``
``naive``       ``softmax(Q K^T / sqrt(d) + mask) V``, the ``n x n`` matrix materialised
``online_b64``  ``online_softmax_attention(block=64)``: FlashAttention-style key blocks
``rnn``         ``online_softmax_attention(block=None)``: one key per step, the RNN of P30
``linear_rnn``  ``linear_attention_rnn``: state ``d x d`` per head, one step per token
``recompute``   ``attention_stack_recompute`` with ``N`` layers: constant memory, every key and
                value recomputed from the input (tiny ``n``, it is ``O(n^{N+1})``)

Times are the median of ``torch.utils.benchmark`` blocked runs after a warm-up call. Memory is
the analytic number of floats each algorithm holds beyond its inputs and outputs (for
``recompute`` the count bookkept by the recursion itself), so it is deterministic.

    python benchmarks/attention_rnn.py                 # full run -> benchmarks/results/
    python benchmarks/attention_rnn.py --smoke --out /tmp/x   # seconds, for the test suite

Writes ``attention_rnn.json`` (all numbers) and ``attention_rnn.md`` (a table) into ``--out``
(``attention_rnn_smoke.*`` with ``--smoke``, so a smoke run never overwrites real results).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
from pathlib import Path

import torch
import torch.utils.benchmark as tb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kexue_lib import online_attention as oa  # noqa: E402

FULL = dict(lengths=[128, 256, 512, 1024, 2048], heads=4, d=64, recompute_lengths=[8, 16, 32],
            layers=2, recompute_d=16, min_run_time=0.3, rnn_max=1024, naive_max=2048)
SMOKE = dict(lengths=[16, 32], heads=2, d=8, recompute_lengths=[4, 6], layers=2, recompute_d=4,
             min_run_time=0.005, rnn_max=32, naive_max=32)


def _naive(q, k, v):
    n = q.shape[-2]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), -math.inf)
    return torch.softmax(s, -1) @ v


def state_floats(method: str, n: int, heads: int, d: int, block: int = 64) -> int:
    """Floats held beyond inputs/outputs, per the algorithm (analytic, per batch entry)."""
    if method == "naive":
        return heads * n * n                       # the score / probability matrix
    if method == "online_b64":
        return heads * (n * (d + 2) + n * min(block, n))   # (m, l, o) per query + one score block
    if method == "rnn":
        return heads * (n * (d + 2) + n)           # (m, l, o) per query + one score column
    if method == "linear_rnn":
        return heads * d * d                       # the state S
    if method == "kv_cache":
        return heads * 2 * n * d                   # what decoding keeps: all keys and values
    raise ValueError(method)


def _median(fn, min_run_time: float) -> float:
    fn()                                            # warm-up
    m = tb.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=min_run_time)
    return float(m.median)


def run(cfg: dict, device: torch.device, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    rows = []
    H, d = cfg["heads"], cfg["d"]
    for n in cfg["lengths"]:
        q, k, v = (torch.randn(1, H, n, d, generator=gen).to(device) for _ in range(3))
        methods = {
            "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True),
            "online_b64": lambda: oa.online_softmax_attention(q, k, v, block=64),
            "linear_rnn": lambda: oa.linear_attention_rnn(q, k, v),
        }
        if n <= cfg["naive_max"]:
            methods["naive"] = lambda: _naive(q, k, v)
        if n <= cfg["rnn_max"]:
            methods["rnn"] = lambda: oa.online_softmax_attention(q, k, v)
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        for name, fn in methods.items():
            if name != "linear_rnn":
                err = float((fn() - ref).abs().max())
                if err > 1e-4:
                    raise AssertionError(f"{name} differs from SDPA by {err:.2e} at n={n}")
            rows.append(dict(method=name, n=n, heads=H, d=d, seconds=_median(fn, cfg["min_run_time"]),
                             state_floats=None if name == "sdpa" else state_floats(name, n, H, d)))
        rows.append(dict(method="kv_cache", n=n, heads=H, d=d, seconds=None,
                         state_floats=state_floats("kv_cache", n, H, d)))
    N, dr = cfg["layers"], cfg["recompute_d"]
    layers = [oa.AttentionLayer(*(0.5 * torch.randn(dr, dr, generator=gen).to(device) for _ in range(4)))
              for _ in range(N)]
    for n in cfg["recompute_lengths"]:
        x = torch.randn(n, dr, generator=gen).to(device)
        out, stats = oa.attention_stack_recompute(x, layers)
        err = float((out - oa.attention_stack(x, layers)).abs().max())
        if err > 1e-4 or stats["reads"] != math.comb(n + N, N + 1):
            raise AssertionError(f"recompute check failed at n={n}: err {err:.2e}, reads {stats['reads']}")
        secs = _median(lambda: oa.attention_stack_recompute(x, layers), cfg["min_run_time"])
        rows.append(dict(method="recompute", n=n, heads=1, d=dr, layers=N, seconds=secs,
                         state_floats=stats["peak_floats"], reads=stats["reads"]))
        secs = _median(lambda: oa.attention_stack(x, layers), cfg["min_run_time"])
        rows.append(dict(method="stack_parallel", n=n, heads=1, d=dr, layers=N, seconds=secs,
                         state_floats=N * 2 * n * dr))
    return dict(
        post="P30 https://kexue.fm/archives/10017",
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        torch=torch.__version__, python=platform.python_version(), platform=platform.platform(),
        device=str(device), threads=torch.get_num_threads(), config=cfg,
        timing="median of torch.utils.benchmark blocked_autorange after one warm-up call",
        rows=rows,
    )


def markdown(res: dict) -> str:
    lines = [
        "# Causal attention as a recurrence: time and memory (P30)",
        "",
        f"torch {res['torch']}, device {res['device']}, {res['threads']} thread(s), {res['date']}. "
        f"{res['timing']}. `floats held` is analytic (beyond inputs and outputs).",
        "",
        "| method | n | heads x d | median time (ms) | floats held |",
        "|---|---:|---|---:|---:|",
    ]
    for r in res["rows"]:
        t = "" if r["seconds"] is None else f"{1e3 * r['seconds']:.3f}"
        f = "" if r["state_floats"] is None else f"{r['state_floats']:,}"
        extra = f" ({r['layers']} layers, {r['reads']:,} input reads)" if "reads" in r else (
            f" ({r['layers']} layers)" if "layers" in r else "")
        lines.append(f"| {r['method']}{extra} | {r['n']} | {r['heads']} x {r['d']} | {t} | {f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and short runs (seconds)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="output directory")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    a = ap.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(a.threads)
    try:
        res = run(SMOKE if a.smoke else FULL, torch.device(a.device))
    finally:
        torch.set_num_threads(threads)                # main() may run inside a test process
    res["smoke"] = a.smoke
    a.out.mkdir(parents=True, exist_ok=True)
    stem = "attention_rnn_smoke" if a.smoke else "attention_rnn"   # a smoke run never overwrites real results
    (a.out / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")
    (a.out / f"{stem}.md").write_text(markdown(res))
    print(f"wrote {a.out / (stem + '.json')} and {a.out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
