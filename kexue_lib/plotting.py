"""One plotting style for the whole book.

``use_style()`` applies the book's matplotlib rcParams; notebooks call it once in their
setup cell and the widget helper applies the same parameters to every frame it draws.
``new_figure`` makes a figure outside pyplot's state machine (so nothing is displayed
twice), and ``figure_png`` renders one to PNG bytes for the widget helper.
"""
from __future__ import annotations

import io

import matplotlib
from matplotlib.figure import Figure

__all__ = ["STYLE", "PALETTE", "use_style", "new_figure", "figure_png"]

#: The colour cycle, colour-blind-safe (Okabe-Ito), in the order curves are usually added.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]

#: The book's rcParams. Sized to read at page width (about 8 inches) without zooming.
STYLE: dict[str, object] = {
    "figure.figsize": (8.0, 3.4),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.constrained_layout.use": True,
    "font.size": 10.5,
    "axes.titlesize": 11,
    "axes.labelsize": 10.5,
    "legend.fontsize": 9.5,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "lines.linewidth": 1.8,
    "image.cmap": "viridis",
    "svg.hashsalt": "kexue-book",  # deterministic ids should anyone save SVG
}


def use_style() -> None:
    """Apply the book's matplotlib style globally (idempotent)."""
    matplotlib.rcParams.update(STYLE)


def new_figure(figsize: tuple[float, float] | None = None) -> Figure:
    """A styled figure that is not registered with pyplot (so it is shown only when asked)."""
    use_style()
    return Figure(figsize=figsize or STYLE["figure.figsize"])


def figure_png(fig: Figure) -> bytes:
    """Render ``fig`` to PNG bytes at the book's resolution."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=STYLE["savefig.dpi"], metadata={"Software": None})
    return buf.getvalue()
