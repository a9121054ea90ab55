"""Smoke test of the benchmark suite (issue 9): ``benchmarks/run.py --smoke`` into a tmp dir.

It checks that the command runs to the end and writes well-formed results, and that every case
whose peer is installed passed its correctness check against the peer. It never checks timings.
A case whose peer package is missing must be reported as skipped, not failed.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("kexue_bench_run", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    status = bench.main(["--smoke", "--out", str(out)])
    return status, out


def test_smoke_run_writes_results(smoke):
    status, out = smoke
    assert status == 0
    res = json.loads((out / "latest.json").read_text())
    assert res["smoke"] is True
    m = res["machine"]
    for key in ("cpu_model", "cpu_count", "torch", "device", "loadavg_start", "loadavg_end"):
        assert key in m
    assert res["bandwidth"]["gbps"] > 0 and res["bandwidth"]["copy_correct"] is True
    assert res["cases"], "no case registered"
    names = [r["name"] for r in res["cases"]]
    assert len(names) == len(set(names))
    table = (out / "latest.md").read_text()
    assert "| case | ours (ms) | peer |" in table and "Copy bandwidth" in table
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    for name in names:                                        # one table row per case
        assert sum(line.startswith(f"| {name} |") for line in rows) == 1
    assert "| family | cases |" in table


def test_smoke_cases_checked_or_skipped(smoke):
    _, out = smoke
    res = json.loads((out / "latest.json").read_text())
    entmax_installed = importlib.util.find_spec("entmax") is not None
    for row in res["cases"]:
        assert row["status"] in ("ok", "skipped"), row
        if row["status"] == "skipped":
            assert "not installed" in row["reason"]
        else:
            diff = row.get("max_abs_err_ours", row["max_abs_diff_vs_peer"])
            assert diff <= row["atol"]
            assert row["ours"]["median_s"] > 0 and row["peer"]["median_s"] > 0
    sparse = [r for r in res["cases"] if r["family"] == "sparsemax"]
    assert sparse and all((r["status"] == "ok") == entmax_installed for r in sparse)
    if entmax_installed:
        assert (out / "latest_ratios.png").stat().st_size > 0
        assert (out / "latest_times.png").stat().st_size > 0


def test_failed_check_is_reported_and_not_timed(bench, tmp_path):
    import torch
    from harness import Case

    x = torch.zeros(3)
    bad = Case(family="t", name="wrong", ours=lambda: x + 1e-3, peer=lambda: x, peer_name="zeros")
    row = bench.run_case(bad, torch.device("cpu"), smoke=True, bandwidth=1.0)
    assert row["status"] == "FAILED" and "ours" not in row and "1e-06" in row["reason"]


def test_missing_peer_is_skipped_in_smoke(bench, monkeypatch, tmp_path):
    # Hide the peer package: the family must skip its cases, and --smoke must still succeed.
    monkeypatch.setitem(sys.modules, "entmax", None)        # makes `import entmax` fail
    status = bench.main(["--smoke", "--only", "sparsemax", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "latest.json").read_text())
    assert status == 0
    assert res["cases"] and all(r["status"] == "skipped" for r in res["cases"])
    assert "skipped" in (tmp_path / "latest.md").read_text().lower()
    # a full (non-smoke) run would call this incomplete: exit status 1 unless --allow-missing
    assert res["summary"]["skipped"] == len(res["cases"])
