#!/usr/bin/env python3
"""Benchmark: two GAU layers (GAU-α style) against one attention + FFN block, forward pass (P17).

For each sequence length this times the forward pass of

* ``gau``: two :class:`kexue_lib.gau.GAU` layers, each followed by residual + parameter-free
  RMSNorm (post-norm, as in GAU-α), ``hidden_size = 2 d``, ``key_size = min(128, d)``;
* ``attn_ffn``: one ``torch.nn.TransformerEncoderLayer`` (post-norm, ``nhead = d / 64``,
  ``dim_feedforward = 4 d``, no biases), the block the two GAUs replace,

reporting the median of several timed runs after warm-up (``torch.utils.benchmark``), the
analytical multiply-accumulates of both (``kexue_lib.gau.gau_macs`` and ``attention_ffn_macs``),
the analytical size of the attention matrices each materialises (``h n^2`` per block for
multi-head attention, ``n^2`` per GAU layer), and on CUDA the measured peak memory
(``torch.cuda.max_memory_allocated``). On CPU no peak memory is measured.

Results go to ``<out>/gau_vs_attention[_smoke].json`` and ``.md``. Usage::

    python benchmarks/gau_vs_attention.py                 # d = 256, n = 128 ... 2048
    python benchmarks/gau_vs_attention.py --d-model 768 --lengths 256 512 1024 2048 4096
    python benchmarks/gau_vs_attention.py --smoke         # tiny sizes, one repeat (seconds)

Timings depend on the machine and its load; they are not checked by any test.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import benchmark

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:          # allow running the script from a checkout without installing
    sys.path.insert(0, str(ROOT))

import kexue_lib as kx  # noqa: E402
from kexue_lib import gau as G  # noqa: E402


class GAUPair(nn.Module):
    """Two GAU layers with GAU-α's post-norm: ``x <- rms_norm(x + GAU(x))`` twice."""

    def __init__(self, d: int, key_size: int, norm: str = "softmax_plus", device=None):
        super().__init__()
        self.layers = nn.ModuleList(
            G.GAU(d, key_size=key_size, norm=norm, device=device) for _ in range(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = F.rms_norm(x + layer(x), (x.shape[-1],))
        return x


def build_models(d: int, device: torch.device) -> dict[str, nn.Module]:
    key_size = min(128, d - d % 2)
    nhead = max(1, d // 64)
    attn = nn.TransformerEncoderLayer(d, nhead, 4 * d, dropout=0.0, bias=False,
                                      batch_first=True, device=device)
    return {"gau": GAUPair(d, key_size, device=device).eval(), "attn_ffn": attn.eval()}


def median_time(fn, x, *, repeats: int, warmup: int) -> float:
    """Median wall time in seconds of ``fn(x)`` over ``repeats`` runs after ``warmup`` calls."""
    for _ in range(warmup):
        fn(x)
    timer = benchmark.Timer(stmt="fn(x)", globals={"fn": fn, "x": x}, num_threads=torch.get_num_threads())
    return statistics.median(timer.timeit(1).median for _ in range(repeats))


def peak_cuda_mib(fn, x) -> float | None:
    if x.device.type != "cuda":
        return None
    torch.cuda.synchronize(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    base = torch.cuda.memory_allocated(x.device)
    fn(x)
    torch.cuda.synchronize(x.device)
    return (torch.cuda.max_memory_allocated(x.device) - base) / 2**20


def run(d: int, lengths: list[int], batch: int, repeats: int, warmup: int, device: torch.device) -> list[dict]:
    torch.manual_seed(0)
    models = build_models(d, device)
    nhead = max(1, d // 64)
    key_size = min(128, d - d % 2)
    bytes_per = torch.tensor([], dtype=torch.float32).element_size()
    rows = []
    for n in lengths:
        x = kx.randn(batch, n, d, seed=n, device=device)
        row = {"n": n}
        with torch.inference_mode():
            for name, model in models.items():
                row[f"{name}_ms"] = 1e3 * median_time(model, x, repeats=repeats, warmup=warmup)
                row[f"{name}_peak_mib"] = peak_cuda_mib(model, x)
        row["gau_gmacs"] = batch * 2 * int(G.gau_macs(n, d, key_size=key_size)) / 1e9
        row["attn_ffn_gmacs"] = batch * int(G.attention_ffn_macs(n, d)) / 1e9
        # attention weights materialised per block: one n x n matrix per head / per GAU layer
        row["gau_attn_matrix_mib"] = batch * 2 * n * n * bytes_per / 2**20
        row["attn_ffn_attn_matrix_mib"] = batch * nhead * n * n * bytes_per / 2**20
        row["time_ratio_gau_over_attn"] = row["gau_ms"] / row["attn_ffn_ms"]
        rows.append(row)
    return rows


def markdown(config: dict, rows: list[dict]) -> str:
    head = (f"# GAU x2 vs attention + FFN, forward pass\n\n"
            f"d_model = {config['d_model']}, batch = {config['batch']}, device = {config['device']}, "
            f"median of {config['repeats']} runs after {config['warmup']} warm-up calls; "
            f"parameters: GAU x2 = {config['params_gau_pair']:,}, attention + FFN = {config['params_attn_ffn']:,}.\n\n")
    cols = ["n", "gau_ms", "attn_ffn_ms", "time_ratio_gau_over_attn", "gau_gmacs", "attn_ffn_gmacs",
            "gau_attn_matrix_mib", "attn_ffn_attn_matrix_mib", "gau_peak_mib", "attn_ffn_peak_mib"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = ["n/a" if r[c] is None else (f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c])) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default=None, help="default: kexue_lib.get_device()")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and one repeat, for the test suite")
    a = ap.parse_args(argv)
    if a.smoke:
        a.d_model, a.lengths, a.batch, a.repeats, a.warmup = 32, [16, 32], 1, 1, 1
    device = kx.get_device(a.device)
    models = build_models(a.d_model, device)
    config = {
        "d_model": a.d_model, "batch": a.batch, "repeats": a.repeats, "warmup": a.warmup,
        "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "platform": platform.platform(), "smoke": a.smoke,
        "params_gau_pair": sum(p.numel() for p in models["gau"].parameters()),
        "params_attn_ffn": sum(p.numel() for p in models["attn_ffn"].parameters()),
    }
    rows = run(a.d_model, a.lengths, a.batch, a.repeats, a.warmup, device)
    result = {"config": config, "rows": rows}
    a.out.mkdir(parents=True, exist_ok=True)
    stem = "gau_vs_attention" + ("_smoke" if a.smoke else "")
    (a.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (a.out / f"{stem}.md").write_text(markdown(config, rows))
    print(markdown(config, rows))
    return result


if __name__ == "__main__":
    main()
