"""Smoke tests for the scripts in benchmarks/: each runs its main() with --smoke into a tmp dir.

They check that the scripts run and write well-formed results, never the timings themselves.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gau_smoke(tmp_path, capsys):
    bench = _load("gau_vs_attention")
    result = bench.main(["--smoke", "--out", str(tmp_path), "--device", "cpu"])
    stored = json.loads((tmp_path / "gau_vs_attention_smoke.json").read_text())
    assert stored["config"] == result["config"] and stored["config"]["smoke"] is True
    assert [r["n"] for r in stored["rows"]] == [16, 32]
    for row in stored["rows"]:
        assert row["gau_ms"] > 0 and row["attn_ffn_ms"] > 0
        assert row["gau_attn_matrix_mib"] > 0 and row["gau_peak_mib"] is None
    table = (tmp_path / "gau_vs_attention_smoke.md").read_text()
    assert table.count("\n| ") == 3 and "GAU x2" in table
    assert "GAU x2" in capsys.readouterr().out
