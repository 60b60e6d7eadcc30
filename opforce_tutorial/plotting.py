"""The one plot style of the book, and the colour of each label source."""

from __future__ import annotations

import matplotlib as mpl

#: One colour per label source, used by every figure of the book.
COLORS = {
    "exact": "#222222",
    "reference": "#1b7837",
    "noise": "#d95f02",
    "reverse (exact posterior)": "#7570b3",
    "reverse (learned flow)": "#1f78b4",
}


def set_style() -> None:
    """Apply the book's matplotlib style (call once at the top of a chapter)."""
    mpl.rcParams.update({
        "figure.dpi": 100,
        "savefig.dpi": 120,
        "figure.figsize": (7.0, 4.0),
        "font.size": 10,
        "axes.titlesize": 10,
        "axes.labelsize": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.25,
        "legend.frameon": False,
        "legend.fontsize": 8,
        "lines.linewidth": 1.6,
        "figure.constrained_layout.use": True,
    })
