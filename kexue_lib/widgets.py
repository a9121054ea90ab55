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
    No kernel behind the output (the HTML book, nbval, a script): one frame at the
    defaults, followed by a deterministic text line naming the controls and their ranges.

The mode is chosen by the ``KEXUE_WIDGETS`` environment variable (``live``/``static``/
``auto``, default ``auto``: live inside an IPython kernel with ipywidgets, static
otherwise). The test suite and the book build set ``static``. A client-side mode for the
static book (frames precomputed over the control grids and swapped by a slider without a
kernel) belongs here too, and needs nothing from the notebooks beyond what they pass now.
"""
from __future__ import annotations

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
_MODES = ("auto", "live", "static")


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
    """The rendering mode :func:`interact` will use here (``live`` or ``static``)."""
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
    figsize : (width, height) in inches, optional
        Defaults to the book's figure size.
    mode : ``"live"`` or ``"static"``, optional
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
    if mode not in ("live", "static"):
        raise ValueError(f"mode must be 'live' or 'static', got {mode!r}")
    defaults = {c.name: c.default for c in controls}
    if mode == "live":  # pragma: no cover - needs a kernel and a front end
        _show_live(draw, controls, defaults, figsize)
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
