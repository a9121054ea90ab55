"""Smoke test for benchmarks/attention_rnn.py (P30): runs it with --smoke into a temporary directory."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import torch  # noqa: F401  (imported at collection time, before the smoke run)

import kexue_lib.online_attention  # noqa: F401

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "attention_rnn.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_attention_rnn", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_smoke_run_writes_json_and_markdown(tmp_path):
    bench = _load()
    assert bench.main(["--smoke", "--out", str(tmp_path)]) == 0   # in-process: torch is already imported
    res = json.loads((tmp_path / "attention_rnn_smoke.json").read_text())
    assert res["smoke"] is True and res["threads"] == 1
    methods = {r["method"] for r in res["rows"]}
    assert {"sdpa", "naive", "online_b64", "rnn", "linear_rnn", "kv_cache", "recompute", "stack_parallel"} <= methods
    for r in res["rows"]:
        assert r["seconds"] is None or (math.isfinite(r["seconds"]) and r["seconds"] > 0)
    H, d = res["config"]["heads"], res["config"]["d"]
    for r in res["rows"]:       # analytic memory: KV cache grows with n, the linear-attention state does not
        if r["method"] == "kv_cache":
            assert r["state_floats"] == 2 * H * r["n"] * d
        if r["method"] == "linear_rnn":
            assert r["state_floats"] == H * d * d
        if r["method"] == "recompute":
            N, dr = r["layers"], r["d"]
            assert r["reads"] == math.comb(r["n"] + N, N + 1)
            assert r["state_floats"] == N * (3 * dr + 2) + 3 * dr
    md = (tmp_path / "attention_rnn_smoke.md").read_text()
    assert md.startswith("# Causal attention as a recurrence") and "| method | n |" in md
    assert md.count("\n| ") == len(res["rows"]) + 1
