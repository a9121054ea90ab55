#!/usr/bin/env python3
"""Run kexue_lib's kernel benchmarks against the libraries users would otherwise pick (issue 9).

    .venv/bin/python benchmarks/run.py                   # full run -> benchmarks/results/latest.*
    .venv/bin/python benchmarks/run.py --smoke           # tiny sizes, one repeat, into a temp dir
    .venv/bin/python benchmarks/run.py --only sparsemax  # one family (or cases whose name matches)
    .venv/bin/python benchmarks/run.py --out DIR

Every module ``benchmarks/kernels/<family>.py`` (not starting with ``_``) is a registered family:
it exposes ``cases(smoke, device)`` returning :class:`harness.Case` objects. For each case the
runner

1. computes ours and the peer's result and checks they agree within the case's tolerance (or
   that ours agrees with a float64 reference). A case that fails its check is NOT timed; it is
   reported as FAILED and the command exits with status 1;
2. times both, interleaved, as the median of several ``torch.utils.benchmark`` runs after a
   warm-up call, and reports ``ratio = peer time / our time`` against the case's target;
3. where the case states the bytes it must move, compares our time with the bandwidth floor
   ``bytes / copy bandwidth``, the bandwidth being measured first in the same run by a large
   ``dst.copy_(src)`` (bytes moved = 2 x size).

It runs on ``kexue_lib.get_device()`` (CUDA when present; ``KEXUE_DEVICE`` overrides) and
writes ``latest.json`` (every number plus the machine, its load average at start and end and
the date), ``latest.md`` (a table, included by the book's Performance page) and two plots
(``latest_ratios.png``, ``latest_times.png``) into ``--out``.

A case whose peer package is not installed is skipped with a message. In a full run that
makes the command exit with status 1 (the results are incomplete) unless ``--allow-missing``;
in a smoke run (the test suite) it is only reported.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch  # noqa: E402

import kexue_lib as kx  # noqa: E402
from harness import Case, max_abs_diff, sync, time_pair  # noqa: E402

KERNELS = BENCH / "kernels"
PEER_PACKAGES = ("entmax", "lion_pytorch", "torchcrf", "torch_struct", "diffusers", "sentencepiece")


# ------------------------------------------------------------------------------ registry
def families() -> list[str]:
    """Registered kernel families: the modules in benchmarks/kernels/, sorted by name."""
    return sorted(p.stem for p in KERNELS.glob("*.py") if not p.stem.startswith("_"))


def load_family(name: str):
    spec = importlib.util.spec_from_file_location(f"kexue_bench_{name}", KERNELS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------ machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: torch.device) -> dict:
    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "peers": {},
    }
    from importlib import metadata

    for dist in ("entmax", "lion-pytorch", "pytorch-crf", "torch-struct", "diffusers", "sentencepiece"):
        try:
            info["peers"][dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info["peers"][dist] = None
    return info


# ------------------------------------------------------------------------------ bandwidth
def copy_bandwidth(device: torch.device, *, smoke: bool) -> dict:
    """Copy bandwidth ``2 * nbytes / t`` of ``dst.copy_(src)`` on a tensor much larger than caches."""
    n = (1 << 20) if smoke else (1 << 26)          # float32: 4 MiB (smoke) or 256 MiB per tensor
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)

    def copy():
        dst.copy_(src)
        sync(device)

    t = time_pair({"copy": copy}, rounds=1 if smoke else 3, min_run_time=0.3, smoke=smoke)["copy"]
    nbytes = src.numel() * src.element_size()
    ok = bool(torch.equal(dst, src))
    return {"tensor_bytes": nbytes, "bytes_moved": 2 * nbytes, "median_s": t["median_s"],
            "gbps": 2 * nbytes / t["median_s"] / 1e9, "copy_correct": ok}


# ------------------------------------------------------------------------------ one case
def run_case(case: Case, device: torch.device, *, smoke: bool, bandwidth: float) -> dict:
    row = {"family": case.family, "name": case.name, "peer_name": case.peer_name,
           "target": case.target, "atol": case.atol, "info": dict(case.info),
           "bytes_min": case.bytes_min, "status": None}
    if case.skip:
        row["status"] = "skipped"
        row["reason"] = case.skip
        return row
    # 1. correctness before timing
    ours_out = case.ours()
    peer_out = case.peer()
    row["max_abs_diff_vs_peer"] = max_abs_diff(ours_out, peer_out)
    if case.reference is not None:
        ref = case.reference()
        row["max_abs_err_ours"] = max_abs_diff(ours_out, ref)
        row["max_abs_err_peer"] = max_abs_diff(peer_out, ref)
        err = row["max_abs_err_ours"]
    else:
        err = row["max_abs_diff_vs_peer"]
    if case.describe is not None:
        row["info"].update(case.describe(ours_out))
    del ours_out, peer_out
    if not err <= case.atol:
        row["status"] = "FAILED"
        row["reason"] = f"max abs difference {err:.3g} > tolerance {case.atol:.3g}"
        return row
    # 2. timing
    def ours():
        case.ours()
        sync(device)

    def peer():
        case.peer()
        sync(device)

    t = time_pair({"ours": ours, "peer": peer}, rounds=1 if smoke else 3,
                  min_run_time=0.2, smoke=smoke)
    row["ours"], row["peer"] = t["ours"], t["peer"]
    row["ratio"] = t["peer"]["median_s"] / t["ours"]["median_s"]
    row["met"] = None if case.target is None else bool(row["ratio"] >= case.target)
    if case.bytes_min:
        floor = case.bytes_min / (bandwidth * 1e9)
        row["floor_s"] = floor
        row["x_floor"] = t["ours"]["median_s"] / floor    # how many times the floor we take
        row["achieved_gbps"] = case.bytes_min / t["ours"]["median_s"] / 1e9
    row["status"] = "ok"
    return row


# ------------------------------------------------------------------------------ reports
def _ms(s: float) -> str:
    ms = s * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _median(v: list[float]) -> float:
    v = sorted(v)
    return 0.5 * (v[(len(v) - 1) // 2] + v[len(v) // 2])


def markdown(res: dict) -> str:
    m, bw = res["machine"], res["bandwidth"]
    load = f"{m['loadavg_start']} at start, {m['loadavg_end']} at end" if m["loadavg_start"] else "n/a"
    lines = [
        f"Measured {res['date']} on **{m['cpu_model']}** ({m['cpu_count']} cores, "
        f"{m['torch_threads']} torch threads), device `{m['device']}`"
        + (f" ({m['gpu']})" if m["gpu"] else "")
        + f", torch {m['torch']}, Python {m['python']}. Load average (1, 5, 15 min): {load}."
        + (" **Smoke run: tiny sizes, one repeat; the times mean nothing.**" if res["smoke"] else ""),
        "",
        f"Copy bandwidth (`dst.copy_(src)`, {bw['tensor_bytes'] / 2**20:.0f} MiB, bytes moved = 2 x size): "
        f"**{bw['gbps']:.2f} GB/s** at the start of the run (used for the floors), "
        f"{bw['gbps_end']:.2f} GB/s at the end.",
        "",
        "Ratio = peer time / our time (above 1: ours is faster); times are medians in ms; "
        "x floor = our time / (minimum bytes moved / copy bandwidth); "
        "diff = max abs difference (vs the peer, or for bisection our error vs a float64 solution).",
        "",
        "| case | ours (ms) | peer | peer (ms) | ratio | target | met? | diff | x floor |",
        "| --- | ---: | --- | ---: | ---: | ---: | :---: | ---: | ---: |",
    ]
    for r in res["cases"]:
        tgt = f">= {r['target']:g}x" if r["target"] is not None else "-"
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | - | {r['peer_name']} | - | - | {tgt} | "
                         f"**{r['status']}** | - | - |")
            continue
        diff = r.get("max_abs_err_ours", r["max_abs_diff_vs_peer"])
        met = "-" if r["met"] is None else ("yes" if r["met"] else "**no**")
        xf = f"{r['x_floor']:.0f}" if "x_floor" in r else "-"
        lines.append(f"| {r['name']} | {_ms(r['ours']['median_s'])} | {r['peer_name']} | "
                     f"{_ms(r['peer']['median_s'])} | {r['ratio']:.2f} | {tgt} | {met} | {diff:.1e} | {xf} |")
    lines += ["", "Per kernel family (timed cases only):", "",
              "| family | cases | ratio min | ratio median | ratio max | targets met | x floor (median) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for fam in sorted({r["family"] for r in res["cases"]}):
        rs = [r for r in res["cases"] if r["family"] == fam and r["status"] == "ok"]
        if not rs:
            lines.append(f"| {fam} | 0 | - | - | - | - | - |")
            continue
        ratios = sorted(r["ratio"] for r in rs)
        xf = sorted(r["x_floor"] for r in rs if "x_floor" in r)
        met = [r["met"] for r in rs if r["met"] is not None]
        lines.append(f"| {fam} | {len(rs)} | {ratios[0]:.2f} | {_median(ratios):.2f} | {ratios[-1]:.2f} | "
                     f"{sum(met)} of {len(met)} | {f'{_median(xf):.0f}' if xf else '-'} |")
    s = res["summary"]
    lines += ["", f"Targets met: {s['met']} of {s['timed_with_target']} timed cases"
              + (f"; missed: {', '.join(s['missed'])}" if s["missed"] else "")
              + (f". Skipped: {s['skipped']}" if s["skipped"] else "")
              + (f". FAILED checks: {', '.join(s['failed'])}" if s["failed"] else "") + "."]
    notes = [r for r in res["cases"] if r["status"] != "ok" and r.get("reason")]
    if notes:
        lines += [""] + [f"- {r['name']}: {r['reason']}" for r in notes]
    return "\n".join(lines) + "\n"


def plots(res: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in res["cases"] if r["status"] == "ok"]
    if not rows:
        return []
    names = [r["name"] for r in rows]
    y = range(len(rows))
    h = 0.28 * len(rows) + 1.2
    files = []

    fig, ax = plt.subplots(figsize=(10, h))
    ratios = [r["ratio"] for r in rows]
    colors = ["tab:green" if r["met"] or r["met"] is None else "tab:red" for r in rows]
    ax.barh(list(y), ratios, color=colors)
    for i, r in enumerate(rows):
        if r["target"] is not None:
            ax.plot([r["target"]] * 2, [i - 0.4, i + 0.4], color="k", lw=1.5)
    ax.axvline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yticks(list(y), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("peer time / our time (log scale)\nblack tick: target; red bar: target missed")
    ax.set_title(f"kexue_lib vs peers on {res['machine']['device']}, load {res['machine']['loadavg_start']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "latest_ratios.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    files.append("latest_ratios.png")

    fig, ax = plt.subplots(figsize=(10, h))
    yy = torch.arange(len(rows), dtype=torch.float64)
    ax.barh((yy - 0.2).tolist(), [r["ours"]["median_s"] * 1e3 for r in rows], height=0.4, label="ours")
    ax.barh((yy + 0.2).tolist(), [r["peer"]["median_s"] * 1e3 for r in rows], height=0.4, label="peer")
    floors = [(i, r["floor_s"] * 1e3) for i, r in enumerate(rows) if "floor_s" in r]
    if floors:
        ax.scatter([f for _, f in floors], [i for i, _ in floors], marker="|", s=120, color="k",
                   label="bandwidth floor", zorder=3)
    ax.set_xscale("log")
    ax.set_yticks(list(y), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("median time (ms, log)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out / "latest_times.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    files.append("latest_times.png")
    return files


# ------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat (seconds); for tests/CI")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only this family, or cases whose name contains NAME (repeatable)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: benchmarks/results, or a temp dir with --smoke)")
    p.add_argument("--allow-missing", action="store_true",
                   help="a full run with a peer missing exits 0 (its cases are skipped)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice, usually the core count)")
    p.add_argument("--list", action="store_true", help="list the registered families and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print("\n".join(families()))
        return 0
    out = args.out or (Path(tempfile.mkdtemp(prefix="kexue-bench-")) if args.smoke else BENCH / "results")
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = kx.get_device()
    start = time.perf_counter()
    res = {"schema": 1, "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "smoke": args.smoke, "argv": sys.argv[1:] if argv is None else list(argv),
           "machine": machine_info(device)}
    res["machine"]["loadavg_start"] = loadavg()
    print(f"device {device}, {res['machine']['cpu_model']}, load {res['machine']['loadavg_start']}", flush=True)

    bw0 = copy_bandwidth(device, smoke=args.smoke)
    print(f"copy bandwidth {bw0['gbps']:.2f} GB/s", flush=True)
    bandwidth = bw0["gbps"]

    rows = []
    names_only = [o for o in args.only if o not in families()]   # --only values that are not families
    for fam in families():
        fam_selected = not args.only or fam in args.only
        if not fam_selected and not names_only:
            continue
        module = load_family(fam)
        for case in module.cases(args.smoke, device):
            if not (fam_selected or any(o in case.name for o in names_only)):
                continue
            t0 = time.perf_counter()
            try:
                row = run_case(case, device, smoke=args.smoke, bandwidth=bandwidth)
            except Exception as err:                # a crashing case is reported, not fatal
                row = {"family": case.family, "name": case.name, "peer_name": case.peer_name,
                       "target": case.target, "status": "FAILED",
                       "reason": f"raised {type(err).__name__}: {err}"}
            row["wall_s"] = time.perf_counter() - t0
            rows.append(row)
            if row["status"] == "ok":
                msg = (f"ours {_ms(row['ours']['median_s'])} ms, peer {_ms(row['peer']['median_s'])} ms, "
                       f"ratio {row['ratio']:.2f}" + ("" if row["met"] is None else
                                                      f" (target {row['target']:g}: {'met' if row['met'] else 'MISSED'})"))
            else:
                msg = f"{row['status'].upper()}: {row['reason']}"
            print(f"[{fam}] {case.name}: {msg}", flush=True)
            del case

    bw1 = copy_bandwidth(device, smoke=args.smoke)
    res["bandwidth"] = {**bw0, "gbps_start": bw0["gbps"], "gbps_end": bw1["gbps"]}
    res["machine"]["loadavg_end"] = loadavg()
    res["cases"] = rows
    timed = [r for r in rows if r["status"] == "ok" and r["target"] is not None]
    res["summary"] = {
        "timed_with_target": len(timed),
        "met": sum(bool(r["met"]) for r in timed),
        "missed": [r["name"] for r in timed if not r["met"]],
        "skipped": sum(r["status"] == "skipped" for r in rows),
        "failed": [r["name"] for r in rows if r["status"] == "FAILED"],
        "wall_s": time.perf_counter() - start,
    }
    (out / "latest.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "latest.md").write_text(markdown(res))
    res["plots"] = plots(res, out)
    print(f"\nwrote {out / 'latest.json'}, {out / 'latest.md'}"
          + "".join(f", {out / f}" for f in res["plots"]), flush=True)
    s = res["summary"]
    print(f"targets met {s['met']}/{s['timed_with_target']}, skipped {s['skipped']}, "
          f"failed {len(s['failed'])}, {s['wall_s']:.0f} s", flush=True)
    if s["failed"]:
        print("CORRECTNESS CHECK FAILED: " + "; ".join(s["failed"]), file=sys.stderr)
        return 1
    if s["skipped"] and not (args.smoke or args.allow_missing):
        print(f"{s['skipped']} case(s) skipped: a peer is missing ({'; '.join(sorted({r['reason'] for r in rows if r['status'] == 'skipped'}))})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
