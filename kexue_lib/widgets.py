"""The book's one widget helper: declarative sliders around a drawing function.

A notebook never builds ipywidgets itself. It writes a drawing function and lists its
controls::

    def draw(fig, b, xmax):
        ax = fig.subplots()
        ...
        return f"max error {err:.4f}"     # optional one-line readout

    interact(draw, Slider("b", 0.0, 4.0, 0.05, default=1.5), Slider("xmax", 2, 10, 1, default=6))

``draw(fig, **values)`` receives a fresh, styled :class:`matplotlib.figure.Figure` and the
current control values by name; it adds its axes to ``fig`` and may return a short text
readout. Because ``draw`` is a pure function of the control values, the helper is free
to call it however the setting demands:

``live``
    Jupyter or Colab with a kernel: ipywidgets sliders; each change redraws the figure.
``static``
    No kernel behind the output (nbval, a script, a stored notebook): one frame at the
    defaults, followed by a deterministic text line naming the controls and their ranges.
``html``
    The built HTML book, where no kernel will ever run: ``draw`` is evaluated at build time
    over the controls' grids and the page gets plain HTML sliders that swap the precomputed
    frames in the browser (no kernel, no network, no JavaScript library). Which frames:

    * each control's grid is thinned to at most ``FRAMES_PER_CONTROL`` values, always
      keeping its default (the readout shows the value actually drawn);
    * if the product of the thinned grids fits in ``FRAME_BUDGET`` frames, every
      combination is precomputed and the sliders move independently;
    * otherwise the frames are taken one control at a time around the defaults: moving
      one slider puts the others back to their defaults, so the figure shown always
      matches the positions of the sliders.

    Frames are PNGs quantised to a 256-colour palette to keep pages light (typically
    10-30 kB a frame; the browser test checks the 3 MB page budget).

The mode is chosen by the ``KEXUE_WIDGETS`` environment variable (``live``/``static``/
``html``/``auto``, default ``auto``: live inside an IPython kernel with ipywidgets, static
otherwise). The test suite sets ``static``; ``python3 dev.py book`` sets ``html``.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from matplotlib.figure import Figure

from ._checks import check_real
from .plotting import figure_png, new_figure

__all__ = ["Slider", "Choice", "interact", "widget_mode", "MODE_ENV"]

#: Environment variable selecting how :func:`interact` renders.
MODE_ENV = "KEXUE_WIDGETS"
_MODES = ("auto", "live", "static", "html")
#: html mode: at most this many values per control (its default always among them) ...
FRAMES_PER_CONTROL = 24
#: ... and at most this many frames per widget (else one control at a time, see above).
FRAME_BUDGET = 60


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


@dataclass(frozen=True)
class Slider:
    """A numeric control from ``min`` to ``max`` in steps of ``step``.

    If ``min``, ``max``, ``step`` and ``default`` are all ``int``, the slider is an integer
    slider. With ``log=True`` the slider moves in equal ratios: ``min``/``max`` are values
    (> 0) and ``step`` is the step of ``log10(value)``.
    """

    name: str
    min: float
    max: float
    step: float
    default: float
    label: str | None = None
    log: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"name must be a Python identifier, got {self.name!r}")
        lo = check_real(self.min, f"{self.name}.min")
        hi = check_real(self.max, f"{self.name}.max", gt=lo)
        check_real(self.step, f"{self.name}.step", gt=0)
        check_real(self.default, f"{self.name}.default", ge=lo, le=hi)
        if self.log and lo <= 0:
            raise ValueError(f"{self.name}.min must be > 0 for a log slider, got {lo}")

    @property
    def is_int(self) -> bool:
        return not self.log and all(
            isinstance(v, int) and not isinstance(v, bool) for v in (self.min, self.max, self.step, self.default)
        )

    def grid(self) -> list[float]:
        """The values the slider can take, from ``min`` to ``max`` inclusive."""
        if self.log:
            a, b = math.log10(self.min), math.log10(self.max)
            n = int(round((b - a) / self.step))
            return [10 ** (a + i * self.step) for i in range(n + 1)]
        n = int(math.floor((self.max - self.min) / self.step + 1e-9))
        vals = [self.min + i * self.step for i in range(n + 1)]
        return [int(v) for v in vals] if self.is_int else [round(v, 12) for v in vals]

    def describe(self) -> str:
        scale = " (log scale)" if self.log else ""
        return f"{self.label or self.name} in [{_fmt(self.min)}, {_fmt(self.max)}]{scale}, step {_fmt(self.step)}"

    def make_widget(self):  # pragma: no cover - needs a kernel
        import ipywidgets as w

        common = dict(description=self.label or self.name, continuous_update=False,
                      style={"description_width": "initial"}, layout=w.Layout(width="24rem"))
        if self.log:
            return w.FloatLogSlider(value=self.default, base=10, min=math.log10(self.min),
                                    max=math.log10(self.max), step=self.step, **common)
        if self.is_int:
            return w.IntSlider(value=self.default, min=self.min, max=self.max, step=self.step, **common)
        return w.FloatSlider(value=self.default, min=self.min, max=self.max, step=self.step,
                             readout_format=".3g", **common)


@dataclass(frozen=True)
class Choice:
    """A control that picks one of ``options`` (shown by ``str``)."""

    name: str
    options: Sequence[Any] = field(default_factory=tuple)
    default: Any = None
    label: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"name must be a Python identifier, got {self.name!r}")
        if len(self.options) == 0:
            raise ValueError(f"{self.name}.options must not be empty")
        object.__setattr__(self, "options", tuple(self.options))
        if self.default is None:
            object.__setattr__(self, "default", self.options[0])
        elif self.default not in self.options:
            raise ValueError(f"{self.name}.default={self.default!r} is not one of the options")

    def grid(self) -> list[Any]:
        return list(self.options)

    def describe(self) -> str:
        return f"{self.label or self.name} in {{{', '.join(_fmt(o) for o in self.options)}}}"

    def make_widget(self):  # pragma: no cover - needs a kernel
        import ipywidgets as w

        return w.Dropdown(options=[(str(o), o) for o in self.options], value=self.default,
                          description=self.label or self.name, style={"description_width": "initial"})


Control = Slider | Choice


def widget_mode() -> str:
    """The rendering mode :func:`interact` will use here (``live``, ``static`` or ``html``)."""
    mode = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if mode not in _MODES:
        raise ValueError(f"{MODE_ENV} must be one of {_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    try:
        from IPython import get_ipython
        import ipywidgets  # noqa: F401
    except ImportError:
        return "static"
    shell = get_ipython()
    return "live" if shell is not None and getattr(shell, "kernel", None) is not None else "static"


def render(draw: Callable[..., str | None], values: dict[str, Any],
           figsize: tuple[float, float] | None = None) -> tuple[bytes, str]:
    """Call ``draw`` on a fresh figure with ``values``; return (PNG bytes, readout text)."""
    fig: Figure = new_figure(figsize)
    readout = draw(fig, **values)
    if readout is not None and not isinstance(readout, str):
        raise TypeError(f"draw must return a str or None, got {type(readout).__name__}")
    return figure_png(fig), readout or ""


def interact(draw: Callable[..., str | None], *controls: Control,
             figsize: tuple[float, float] | None = None, mode: str | None = None) -> None:
    """Show ``draw`` with one control per entry of ``controls`` (see the module docstring).

    Parameters
    ----------
    draw : callable ``draw(fig, **values) -> str | None``
        Adds axes to ``fig`` for the given control values; may return a one-line readout.
    controls : Slider or Choice
        One per keyword argument of ``draw``; names must be distinct.
    figsize : tuple of float, optional
        Figure size ``(width, height)`` in inches; defaults to the book's figure size.
    mode : ``"live"``, ``"static"`` or ``"html"``, optional
        Overrides ``KEXUE_WIDGETS``.
    """
    if not callable(draw):
        raise TypeError(f"draw must be callable, got {type(draw).__name__}")
    if not controls:
        raise ValueError("controls: give at least one Slider or Choice")
    for c in controls:
        if not isinstance(c, (Slider, Choice)):
            raise TypeError(f"controls must be Slider or Choice, got {type(c).__name__}")
    names = [c.name for c in controls]
    if len(set(names)) != len(names):
        raise ValueError(f"controls: names must be distinct, got {names}")
    mode = widget_mode() if mode is None else mode
    if mode not in _MODES[1:]:
        raise ValueError(f"mode must be one of {_MODES[1:]}, got {mode!r}")
    defaults = {c.name: c.default for c in controls}
    if mode == "live":  # pragma: no cover - needs a kernel and a front end
        _show_live(draw, controls, defaults, figsize)
    elif mode == "html":
        from IPython.display import HTML, display

        display(HTML(html_widget(draw, controls, figsize=figsize)))
    else:
        _show_static(draw, controls, defaults, figsize)


def _show_static(draw, controls, defaults, figsize) -> None:
    from IPython.display import Image, display

    png, readout = render(draw, defaults, figsize)
    display(Image(data=png, format="png"))
    at = ", ".join(f"{c.label or c.name} = {_fmt(defaults[c.name])}" for c in controls)
    print(f"[static view at {at}]" + (f"  {readout}" if readout else ""))
    print("Controls: " + "; ".join(c.describe() for c in controls) + ". Run the notebook to move them.")


def _show_live(draw, controls, defaults, figsize) -> None:  # pragma: no cover - needs a kernel
    import ipywidgets as w
    from IPython.display import display

    sliders = {c.name: c.make_widget() for c in controls}
    image = w.Image(format="png", layout=w.Layout(max_width="100%"))
    text = w.HTML()

    def update(_change=None):
        png, readout = render(draw, {k: s.value for k, s in sliders.items()}, figsize)
        image.value = png
        text.value = f"<code>{readout}</code>" if readout else ""

    for s in sliders.values():
        s.observe(update, names="value")
    update()
    display(w.VBox([w.HBox(list(sliders.values()), layout=w.Layout(flex_flow="row wrap")), text, image]))


# ----------------------------------------------------------------------------- html mode
def thinned_grid(control: Control, limit: int = FRAMES_PER_CONTROL) -> list[Any]:
    """At most ``limit`` evenly spaced values of ``control.grid()``, always with its default."""
    grid = control.grid()
    if len(grid) > limit:
        idx = sorted({round(i * (len(grid) - 1) / (limit - 1)) for i in range(limit)})
        grid = [grid[i] for i in idx]
    default = control.default
    if not any(_same(v, default) for v in grid):
        # replace the nearest value by the default itself, keeping the grid sorted
        if isinstance(control, Slider):
            j = min(range(len(grid)), key=lambda i: abs(grid[i] - default))
            grid[j] = default
            grid.sort()
        else:  # a Choice's default is always one of its options
            grid.append(default)
    return grid


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _compact_png(png: bytes) -> bytes:
    """Re-encode a PNG with a 256-colour palette (lines and text survive; size drops ~3x)."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    out = io.BytesIO()
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        out, format="PNG", optimize=True)
    return out.getvalue()


def frame_plan(controls: Sequence[Control], budget: int = FRAME_BUDGET) -> tuple[str, list[list[Any]], list[tuple[int, ...]]]:
    """Which frames html mode precomputes: (``"product"`` or ``"axis"``, grids, index tuples)."""
    grids = [thinned_grid(c) for c in controls]
    home = tuple(next(i for i, v in enumerate(g) if _same(v, c.default)) for g, c in zip(grids, controls))
    if math.prod(len(g) for g in grids) <= budget:
        return "product", grids, list(itertools.product(*(range(len(g)) for g in grids)))
    states = {home}
    for k, g in enumerate(grids):
        for i in range(len(g)):
            states.add(home[:k] + (i,) + home[k + 1:])
    return "axis", grids, sorted(states)


def html_widget(draw: Callable[..., str | None], controls: Sequence[Control],
                figsize: tuple[float, float] | None = None) -> str:
    """Self-contained HTML for a slider widget that swaps precomputed frames (see module doc)."""
    kind, grids, states = frame_plan(controls)
    images, readouts, index = [], [], {}
    seen: dict[bytes, int] = {}
    for state in states:
        values = {c.name: g[i] for c, g, i in zip(controls, grids, state)}
        png, readout = render(draw, values, figsize)
        png = _compact_png(png)
        if png not in seen:  # identical frames (e.g. a control that changes only the readout) are stored once
            seen[png] = len(images)
            images.append("data:image/png;base64," + base64.b64encode(png).decode("ascii"))
        index[",".join(map(str, state))] = [seen[png], len(readouts)]
        readouts.append(readout)
    home = [next(i for i, v in enumerate(g) if _same(v, c.default)) for g, c in zip(grids, controls)]
    spec = {
        "kind": kind,
        "home": home,
        "controls": [{"name": c.name, "label": c.label or c.name, "values": [_fmt(v) for v in g]}
                     for c, g in zip(controls, grids)],
        "index": index, "images": images, "readouts": readouts,
    }
    payload = json.dumps(spec, separators=(",", ":"))
    uid = "kxw-" + hashlib.sha1(payload.encode()).hexdigest()[:10]
    first_img, first_readout = index[",".join(map(str, home))]
    rows = []
    for k, (c, g) in enumerate(zip(controls, grids)):
        label = html.escape(c.label or c.name)
        if isinstance(c, Choice):
            opts = "".join(f'<option value="{i}"{" selected" if i == home[k] else ""}>{html.escape(_fmt(v))}</option>'
                           for i, v in enumerate(g))
            field_ = f'<select data-k="{k}" aria-label="{label}">{opts}</select>'
        else:
            field_ = (f'<input type="range" data-k="{k}" min="0" max="{len(g) - 1}" step="1" value="{home[k]}" '
                      f'aria-label="{label}">')
        rows.append(f'<label class="kx-control"><span class="kx-name">{label}</span> {field_} '
                    f'<output>{html.escape(_fmt(g[home[k]]))}</output></label>')
    note = ("" if kind == "product" else
            '<div class="kx-note">Precomputed one control at a time: moving a slider resets the others.</div>')
    readout = html.escape(readouts[first_readout])
    return f"""<div class="kx-widget" id="{uid}">
<style>#{uid} .kx-control{{display:inline-flex;align-items:center;gap:.5em;margin:0 1.5em .3em 0}}
#{uid} input[type=range]{{width:14em}} #{uid} output{{font-family:monospace;min-width:4em}}
#{uid} .kx-note{{font-size:.85em;opacity:.75}} #{uid} img{{max-width:100%;height:auto;display:block}}
#{uid} .kx-readout{{font-family:monospace;min-height:1.3em}}</style>
<div class="kx-controls">{''.join(rows)}</div>{note}
<div class="kx-readout">{readout}</div>
<img class="kx-frame" alt="figure for the current slider positions" src="{images[first_img]}">
<script type="application/json" class="kx-spec">{payload}</script>
<script>{_WIDGET_JS}</script>
</div>"""


# Plain JavaScript, no library: find this widget's spec, wire its inputs to the frames.
_WIDGET_JS = r"""(function(){var root=document.currentScript.parentElement;
var spec=JSON.parse(root.querySelector('script.kx-spec').textContent);
var inputs=root.querySelectorAll('[data-k]'),state=spec.home.slice();
var img=root.querySelector('img.kx-frame'),ro=root.querySelector('.kx-readout');
function show(){var hit=spec.index[state.join(',')];if(!hit)return;
img.src=spec.images[hit[0]];ro.textContent=spec.readouts[hit[1]];
inputs.forEach(function(el){var k=+el.dataset.k;el.value=state[k];
el.parentElement.querySelector('output').textContent=spec.controls[k].values[state[k]];});}
inputs.forEach(function(el){el.addEventListener('input',function(){var k=+el.dataset.k;
if(spec.kind==='axis'){state=spec.home.slice();}state[k]=+el.value;show();});});})();"""
