"""Smoke test of benchmarks/linear_scan.py (P23): runs ``main(["--smoke"])`` into a temporary directory."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "linear_scan.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_linear_scan", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_linear_scan_smoke(tmp_path, capsys):
    mod = _load()
    report = mod.main(["--smoke", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "linear_scan.json").read_text())
    assert data["settings"]["smoke"] is True and data == json.loads(json.dumps(report))
    rows = data["results"]
    assert {r["method"] for r in rows} == {"sequential", "parallel", "doubling", "odd_even"}
    assert {r["L"] for r in rows} == set(data["settings"]["lengths"])
    for r in rows:
        assert r["median_s"] > 0 and r["runs"] >= 1
        if r["method"] != "sequential":
            assert r["max_rel_diff_vs_sequential"] < 1e-4      # complex64: the scans agree
    table = (tmp_path / "linear_scan.md").read_text()
    assert table.startswith("# linear_scan timings") and "| 128 |" in table
    assert "linear_scan timings" in capsys.readouterr().out
