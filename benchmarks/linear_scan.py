#!/usr/bin/env python3
"""Time ``kexue_lib.recurrent.linear_scan`` (P23): the sequential loop against the log-depth scans.

For each sequence length ``L`` and each method (``sequential``, ``parallel`` = Su's
Upper/Lower divide and conquer, ``doubling`` = Hillis-Steele, ``odd_even`` = the
work-efficient Odd/Even or Blelloch scheme) the script times
``linear_scan(lam, u)`` on complex inputs of shape ``(batch, L, d)`` with
``torch.utils.benchmark.Timer.blocked_autorange`` after a few warm-up calls, and records the
median run time (plus the interquartile range and the number of runs). It also records the
largest difference between each parallel method and the sequential one, so a fast but wrong
scan cannot go unnoticed.

Results go to ``<out>/linear_scan.json`` (every number, plus the machine and the settings) and
``<out>/linear_scan.md`` (a table). Timings depend on the machine, its load and the thread
count: compare methods within one run, not numbers across machines.

    python benchmarks/linear_scan.py                 # full run into benchmarks/results/
    python benchmarks/linear_scan.py --smoke         # seconds: tiny sizes (used by the tests)
    python benchmarks/linear_scan.py --device cuda --lengths 1024 4096 16384
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
from pathlib import Path

import torch
import torch.utils.benchmark as tbench

from kexue_lib import recurrent as rc

HERE = Path(__file__).resolve().parent
METHODS = ("sequential", "parallel", "doubling", "odd_even")
DTYPES = {"complex64": torch.complex64, "complex128": torch.complex128}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024, 4096, 16384])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--d", type=int, default=64, help="state channels")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="complex64")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--min-run-time", type=float, default=0.5, help="seconds per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before each measurement")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and short runs (a few seconds)")
    a = p.parse_args(argv)
    if a.smoke:
        a.lengths, a.d, a.batch, a.min_run_time, a.warmup = [16, 128], 8, 2, 0.01, 1
    return a


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    real = torch.float32 if dtype == torch.complex64 else torch.float64
    gen = torch.Generator().manual_seed(0)
    lam = rc.ring_init(args.d, generator=gen, dtype=real).to(device)
    rows = []
    for L in args.lengths:
        u = torch.randn(args.batch, L, args.d, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
        ref = rc.linear_scan(lam, u, method="sequential") if "sequential" in args.methods else None
        for method in args.methods:
            def fn(method=method):
                out = rc.linear_scan(lam, u, method=method)
                _sync(device)
                return out
            for _ in range(args.warmup):
                out = fn()
            timer = tbench.Timer(stmt="fn()", globals={"fn": fn}, num_threads=args.threads,
                                 label="linear_scan", sub_label=f"L={L}", description=method)
            m = timer.blocked_autorange(min_run_time=args.min_run_time)
            err = None if ref is None else float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
            rows.append({"L": L, "method": method, "median_s": m.median, "iqr_s": m.iqr,
                         "runs": len(m.times), "max_rel_diff_vs_sequential": err,
                         "depth": {"sequential": L - 1, "odd_even": 2 * rc.scan_depth(L)}.get(method, rc.scan_depth(L))})
    return {
        "benchmark": "kexue_lib.recurrent.linear_scan",
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "settings": {"lengths": args.lengths, "methods": args.methods, "d": args.d, "batch": args.batch,
                     "dtype": args.dtype, "device": str(device), "threads": args.threads,
                     "min_run_time": args.min_run_time, "warmup": args.warmup, "smoke": args.smoke},
        "results": rows,
    }


def markdown(report: dict) -> str:
    s = report["settings"]
    methods = s["methods"]
    lines = [
        "# linear_scan timings (median of runs after warm-up, torch.utils.benchmark)",
        "",
        f"{report['date_utc']}; {report['machine']['platform']}; torch {report['machine']['torch']}; "
        f"device {s['device']}, {s['threads']} thread(s); u: ({s['batch']}, L, {s['d']}) {s['dtype']}.",
        "",
        "| L | " + " | ".join(f"{m} (ms)" for m in methods) + " | max rel. diff vs sequential |",
        "|---|" + "---|" * (len(methods) + 1),
    ]
    for L in s["lengths"]:
        rows = {r["method"]: r for r in report["results"] if r["L"] == L}
        diffs = [r["max_rel_diff_vs_sequential"] for r in rows.values()
                 if r["method"] != "sequential" and r["max_rel_diff_vs_sequential"] is not None]
        times = " | ".join(f"{1e3 * rows[m]['median_s']:.3f}" for m in methods)
        diff = f"{max(diffs):.1e}" if diffs else "-"
        lines.append(f"| {L} | {times} | {diff} |")
    lines += ["", "Timings depend on the machine and its load; compare the methods within one run.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    report = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "linear_scan.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "linear_scan.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
