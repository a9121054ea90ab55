"""Tests of kexue_lib's core: argument checks, device choice, seeded CPU-drawn data, widgets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kexue_lib as kx
from kexue_lib import _checks, device as kdev, widgets
from kexue_lib.plotting import figure_png, new_figure


# ---------------------------------------------------------------- argument checks
def test_check_tensor_accepts_and_returns_input():
    x = torch.ones(2, 3)
    assert _checks.check_tensor(x, "x", ndim=2) is x


@pytest.mark.parametrize(
    "value, kwargs, exc, msg",
    [
        ([1.0, 2.0], {}, TypeError, "x must be a torch.Tensor"),
        (torch.ones(3, dtype=torch.int64), {}, TypeError, "x must have a floating dtype"),
        (torch.ones(3), {"ndim": 2}, ValueError, "x must have 2 dimension"),
        (torch.ones(3), {"min_ndim": 2}, ValueError, "x must have at least 2"),
        (torch.tensor([1.0, float("nan")]), {}, ValueError, "x contains NaN"),
        (torch.tensor([1.0, float("inf")]), {}, ValueError, "x contains NaN"),
    ],
)
def test_check_tensor_rejects(value, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        _checks.check_tensor(value, "x", **kwargs)


def test_check_tensor_allows_nonfinite_when_asked():
    _checks.check_tensor(torch.tensor([float("inf")]), "x", finite=False)
    _checks.check_tensor(torch.tensor([1, 2]), "x", floating=False)


def test_check_dim():
    x = torch.ones(2, 3, 4)
    assert _checks.check_dim(-1, x) == 2
    assert _checks.check_dim(1, x) == 1
    with pytest.raises(ValueError, match="dim=3 is out of range"):
        _checks.check_dim(3, x)
    with pytest.raises(TypeError, match="dim must be an int"):
        _checks.check_dim(1.0, x)
    with pytest.raises(TypeError, match="axis must be an int"):
        _checks.check_dim(True, x, "axis")


def test_check_real_bounds_and_types():
    assert _checks.check_real(2, "b", gt=0) == 2.0
    assert _checks.check_real(torch.tensor(0.5), "b", ge=0, le=1) == 0.5
    for kwargs, msg in [({"gt": 2}, "> 2"), ({"ge": 3}, ">= 3"), ({"lt": 2}, "< 2"), ({"le": 1}, "<= 1")]:
        with pytest.raises(ValueError, match=f"b must be {msg}"):
            _checks.check_real(2, "b", **kwargs)
    with pytest.raises(ValueError, match="b must be finite"):
        _checks.check_real(float("nan"), "b")
    with pytest.raises(TypeError, match="b must be a real number"):
        _checks.check_real("1", "b")
    with pytest.raises(TypeError, match="b must be a real number"):
        _checks.check_real(True, "b")


def test_check_int():
    assert _checks.check_int(np.int64(3), "n", ge=1) == 3
    with pytest.raises(ValueError, match="n must be >= 1"):
        _checks.check_int(0, "n", ge=1)
    with pytest.raises(ValueError, match="n must be <= 4"):
        _checks.check_int(5, "n", le=4)
    with pytest.raises(TypeError, match="n must be an int"):
        _checks.check_int(2.0, "n")


# ---------------------------------------------------------------- device and random data
def test_get_device_default_is_available(monkeypatch):
    monkeypatch.delenv(kdev.DEVICE_ENV, raising=False)
    dev = kx.get_device()
    torch.zeros(1, device=dev)  # usable
    if not torch.cuda.is_available():
        assert dev.type in ("cpu", "mps")


def test_get_device_env_override(monkeypatch):
    monkeypatch.setenv(kdev.DEVICE_ENV, "cpu")
    assert kx.get_device() == torch.device("cpu")
    assert kx.get_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_get_device_refuses_unavailable(monkeypatch):
    monkeypatch.setenv(kdev.DEVICE_ENV, "cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        kx.get_device()


def test_get_device_rejects_unknown():
    with pytest.raises(ValueError, match="unknown device"):
        kx.get_device("tpu-please")


def test_randn_is_seeded_and_device_independent():
    a = kx.randn(3, 4, seed=7)
    b = kx.randn(3, 4, seed=7)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # drawn in float64 on the CPU: the float32 result is the rounded float64 draw
    c = kx.randn(3, 4, seed=7, dtype=torch.float64)
    torch.testing.assert_close(a, c.float(), rtol=0, atol=0)
    assert a.device.type == "cpu" and a.dtype == torch.float32
    assert not torch.equal(a, kx.randn(3, 4, seed=8))


def test_generator_stream_continues():
    g = kx.generator(1)
    first, second = kx.randn(5, gen=g), kx.randn(5, gen=g)
    assert not torch.equal(first, second)
    g2 = kx.generator(1)
    torch.testing.assert_close(kx.randn(5, gen=g2), first, rtol=0, atol=0)


def test_rand_range_and_errors():
    u = kx.rand(10_000, seed=3)
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 0.02
    with pytest.raises(ValueError, match="seed and gen"):
        kx.rand(3, seed=1, gen=kx.generator(1))
    with pytest.raises(ValueError, match="shape must be >= 0"):
        kx.randn(-1)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        kx.seed_everything(-1)


def test_seed_everything_seeds_all_generators():
    import random

    kx.seed_everything(5)
    r1, n1, t1 = random.random(), np.random.rand(), torch.rand(1)
    kx.seed_everything(5)
    assert (r1, n1) == (random.random(), np.random.rand())
    assert torch.equal(t1, torch.rand(1))


# ---------------------------------------------------------------- plotting and widgets
def _draw(fig, b, kind="a"):
    ax = fig.subplots()
    xs = np.linspace(-2, 2, 50)
    ax.plot(xs, xs * b)
    return f"b={b:.2f} kind={kind}"


def test_slider_grid_and_validation():
    s = kx.Slider("b", 0.0, 1.0, 0.25, default=0.5)
    assert s.grid() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert not s.is_int
    n = kx.Slider("n", 1, 9, 2, default=3)
    assert n.is_int and n.grid() == [1, 3, 5, 7, 9]
    lg = kx.Slider("t", 0.01, 100.0, 1.0, default=1.0, log=True)
    np.testing.assert_allclose(lg.grid(), [0.01, 0.1, 1.0, 10.0, 100.0])
    assert "log scale" in lg.describe()
    with pytest.raises(ValueError, match="b.default must be <= 1"):
        kx.Slider("b", 0.0, 1.0, 0.1, default=2.0)
    with pytest.raises(ValueError, match="b.max must be > 1"):
        kx.Slider("b", 1.0, 1.0, 0.1, default=1.0)
    with pytest.raises(ValueError, match="b.step must be > 0"):
        kx.Slider("b", 0.0, 1.0, 0.0, default=0.5)
    with pytest.raises(ValueError, match="identifier"):
        kx.Slider("not a name", 0.0, 1.0, 0.1, default=0.5)
    with pytest.raises(ValueError, match="for a log slider"):
        kx.Slider("t", 0.0, 1.0, 0.1, default=0.5, log=True)


def test_choice_validation():
    c = kx.Choice("kind", ["a", "b"])
    assert c.default == "a" and c.grid() == ["a", "b"]
    with pytest.raises(ValueError, match="kind.options must not be empty"):
        kx.Choice("kind", [])
    with pytest.raises(ValueError, match="not one of the options"):
        kx.Choice("kind", ["a"], default="z")


def test_widget_mode_env(monkeypatch):
    monkeypatch.setenv(widgets.MODE_ENV, "static")
    assert widgets.widget_mode() == "static"
    monkeypatch.setenv(widgets.MODE_ENV, "auto")
    assert widgets.widget_mode() == "static"  # no kernel under pytest
    monkeypatch.setenv(widgets.MODE_ENV, "bogus")
    with pytest.raises(ValueError, match="KEXUE_WIDGETS"):
        widgets.widget_mode()


def test_render_returns_png_and_readout():
    png, text = widgets.render(_draw, {"b": 0.5, "kind": "z"})
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert text == "b=0.50 kind=z"
    with pytest.raises(TypeError, match="draw must return a str or None"):
        widgets.render(lambda fig, b: 3, {"b": 1})


def test_interact_static_output_is_deterministic(capsys):
    controls = (kx.Slider("b", 0.0, 1.0, 0.25, default=0.5), kx.Choice("kind", ["a", "b"], default="b"))
    kx.interact(_draw, *controls, mode="static")
    first = capsys.readouterr().out
    kx.interact(_draw, *controls, mode="static")
    assert capsys.readouterr().out == first
    assert "[static view at b = 0.5, kind = b]  b=0.50 kind=b" in first
    assert "Controls: b in [0, 1], step 0.25; kind in {a, b}" in first


def test_interact_validates():
    s = kx.Slider("b", 0.0, 1.0, 0.25, default=0.5)
    with pytest.raises(TypeError, match="draw must be callable"):
        kx.interact(3, s)
    with pytest.raises(ValueError, match="at least one"):
        kx.interact(_draw)
    with pytest.raises(TypeError, match="controls must be Slider or Choice"):
        kx.interact(_draw, {"b": 1})
    with pytest.raises(ValueError, match="names must be distinct"):
        kx.interact(_draw, s, s)
    with pytest.raises(ValueError, match="mode must be"):
        kx.interact(_draw, s, mode="html?")


def test_figures_render_the_same_bytes_twice():
    def png():
        fig = new_figure((4, 3))
        fig.subplots().plot([0, 1], [1, 0])
        return figure_png(fig)

    assert png() == png()


@settings(max_examples=50, deadline=None)
@given(lo=st.floats(-100, 100), width=st.floats(0.01, 100), n=st.integers(1, 60))
def test_slider_grid_spans_range(lo, width, n):
    step = width / n
    s = kx.Slider("v", lo, lo + width, step, default=lo)
    g = s.grid()
    assert len(g) in (n, n + 1)
    assert math.isclose(g[0], lo, abs_tol=1e-9)
    assert all(lo - 1e-9 <= v <= lo + width + 1e-9 for v in g)


# ---------------------------------------------------------------- html mode (client-side sliders)
def test_thinned_grid_keeps_default_and_limit():
    s = kx.Slider("b", 0.0, 4.0, 0.05, default=1.52)  # 81 values, default off the grid
    g = widgets.thinned_grid(s, limit=10)
    assert len(g) <= 10 and 1.52 in g and g == sorted(g)
    assert g[0] == 0.0 and g[-1] == 4.0
    c = kx.Choice("k", list("abcdef"), default="f")
    assert "f" in widgets.thinned_grid(c, limit=3)


def test_frame_plan_product_or_axis():
    small = (kx.Slider("a", 0, 4, 1, default=2), kx.Choice("k", ["x", "y"]))
    kind, grids, states = widgets.frame_plan(small, budget=10)
    assert kind == "product" and len(states) == 10
    big = (kx.Slider("a", 0, 9, 1, default=2), kx.Slider("b", 0, 9, 1, default=5))
    kind, grids, states = widgets.frame_plan(big, budget=50)
    assert kind == "axis" and len(states) == 10 + 10 - 1
    assert all(s[0] == 2 or s[1] == 5 for s in states)  # one control away from home at a time


def test_html_widget_is_self_contained_and_frames_differ():
    import json
    import re

    html_ = widgets.html_widget(_draw, (kx.Slider("b", 0.0, 1.0, 0.5, default=0.5), kx.Choice("kind", ["a", "b"])))
    spec = json.loads(re.search(r'<script type="application/json" class="kx-spec">(.*?)</script>', html_, re.S).group(1))
    assert spec["kind"] == "product" and len(spec["index"]) == 6
    assert len(set(spec["images"])) >= 3  # b=0 gives a flat line, other values differ
    assert all(im.startswith("data:image/png;base64,") for im in spec["images"])
    assert spec["readouts"][spec["index"]["1,0"][1]] == "b=0.50 kind=a"
    assert "http" not in html_  # nothing is fetched from the network
    assert widgets.html_widget(_draw, (kx.Slider("b", 0.0, 1.0, 0.5, default=0.5),)).count("<img") == 1
