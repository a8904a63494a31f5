"""Reliability diagrams per level, before and after calibration: one figure for the cohort page
and for ``hmil evaluate``'s ``RUN/reliability.html``.

Why one engine: the page and the CLI promise the same diagrams, so both draw them from the
folds' ``reliability.csv`` (:func:`hmil.train.evaluate.read_reliability`) with
:func:`reliability_figure`; the CLI adds the ECE per level (computed from the same bins, so the
numbers match the points) and writes the figure as one self-contained HTML file. Pure
builders: a table in, a ``go.Figure`` or an HTML string out, so tests can inspect what is
drawn. Labels that come from data go through :func:`hmil.text.plotly`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from hmil import text

#: the file ``hmil evaluate`` writes into the run folder
RELIABILITY_HTML = "reliability.html"
#: calibration levels of ``test_metrics.json`` / ``reliability.csv`` and how the diagrams name
#: them (the cohort page and ``reliability.html`` show the same panels)
CALIBRATION_LEVELS = (
    ("fine", "fine"),
    ("coarse", "coarse (fine summed)"),
    ("coarse_head", "coarse classifier"),
)
#: colours of the reliability diagrams: raw probabilities orange, calibrated blue (the
#: viewer's bar colour)
CALIBRATION_COLOURS = {"before": "#e8853d", "after": "#1c83e1"}
CALIBRATION_NAMES = {"before": "before calibration (raw)", "after": "after calibration"}


def reliability_figure(
    table: pd.DataFrame, levels: Sequence[tuple[str, str]], title: str
) -> go.Figure:
    """Reliability diagrams side by side, one per ``(level key, title)`` of ``levels`` that
    ``table`` has: per fold and ``before`` / ``after`` calibration, the equal-mass bins' mean
    top-label confidence (x) against their accuracy (y), a marker per bin as large as its
    count (hover: fold, bin, count), and the diagonal of perfect calibration. A panel's x axis
    starts at the tenth below its least confident bin: a confident model's bins crowd near 1
    (lines between the few slides of a fold's bins zig-zag, so the bins are points).

    ``table`` has the columns of :func:`hmil.train.evaluate.read_reliability` (``fold, level,
    calibration, bin, confidence, accuracy, count``), one row per bin. The panel titles are
    shown as given (callers pass their own words; data goes through :func:`text.plotly`)."""
    from plotly.subplots import make_subplots

    shown = [(key, name) for key, name in levels if (table["level"] == key).any()]
    fig = make_subplots(rows=1, cols=max(1, len(shown)), subplot_titles=[n for _, n in shown])
    legend: set[str] = set()
    for col, (key, _) in enumerate(shown, start=1):
        part = table[table["level"] == key]
        fig.add_trace(
            go.Scatter(
                x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "#999"},
                name="perfect calibration", hoverinfo="skip", showlegend=col == 1,
                legendgroup="diagonal",
            ),
            row=1, col=col,
        )  # fmt: skip
        for (fold, when), bins in part.groupby(["fold", "calibration"], sort=True):
            bins = bins.sort_values("bin")
            fig.add_trace(
                go.Scatter(
                    x=bins["confidence"].to_numpy(dtype=float),
                    y=bins["accuracy"].to_numpy(dtype=float),
                    mode="markers",
                    name=CALIBRATION_NAMES.get(str(when), text.plotly(str(when))),
                    legendgroup=str(when),
                    showlegend=str(when) not in legend,
                    marker={
                        "size": np.clip(5 + 2 * bins["count"].to_numpy(dtype=float), 6, 18),
                        "opacity": 0.7,
                        "color": CALIBRATION_COLOURS.get(str(when), "#555"),
                    },
                    customdata=np.stack([bins["bin"], bins["count"]], axis=1),
                    hovertemplate=f"fold {fold} · {text.plotly(str(when))}<br>"
                    "bin %{customdata[0]} (%{customdata[1]} slides)<br>"
                    "confidence %{x:.3f}, accuracy %{y:.3f}<extra></extra>",
                ),
                row=1, col=col,
            )  # fmt: skip
            legend.add(str(when))
        low = math.floor(10 * float(part["confidence"].min())) / 10 if len(part) else 0.0
        fig.update_xaxes(range=[max(0.0, min(low, 0.9)) - 0.01, 1.01], row=1, col=col)
    fig.update_xaxes(title_text="mean confidence of the bin")
    fig.update_yaxes(title_text="accuracy of the bin", range=[-0.02, 1.02], col=1)
    fig.update_yaxes(range=[-0.02, 1.02])
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=380,
        margin={"l": 10, "r": 10, "t": 60, "b": 40},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def bins_ece(bins: pd.DataFrame) -> float:
    """Expected calibration error of one fold's bins of one level and calibration:
    Σ_b (n_b / S) · |accuracy_b − confidence_b| (:func:`hmil.calibration.ece` on the bins it
    was computed from; NaN without slides)."""
    counts = bins["count"].to_numpy(dtype=float)
    if counts.sum() <= 0:
        return math.nan
    gap = np.abs(bins["accuracy"].to_numpy(dtype=float) - bins["confidence"].to_numpy(dtype=float))
    return float((counts * gap).sum() / counts.sum())


def level_ece(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``level -> {"before": ece, "after": ece}``: each fold's ECE from its bins
    (:func:`bins_ece`), the mean over the folds (as the cohort page's caption)."""
    per_fold: dict[str, dict[str, list[float]]] = {}
    for (level, when, _), bins in table.groupby(["level", "calibration", "fold"], sort=True):
        value = bins_ece(bins)
        if math.isfinite(value):
            per_fold.setdefault(str(level), {}).setdefault(str(when), []).append(value)
    return {
        level: {when: float(np.mean(values)) for when, values in whens.items()}
        for level, whens in per_fold.items()
    }


def ece_titles(table: pd.DataFrame, levels: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """``levels`` with each title followed by its ECE before → after (mean over the folds),
    e.g. ``("fine", "fine · ECE 0.084 → 0.080")``; a level without both numbers keeps its
    title."""
    eces = level_ece(table)
    out = []
    for key, name in levels:
        numbers = eces.get(key, {})
        if {"before", "after"} <= set(numbers):
            name = f"{name} · ECE {numbers['before']:.3f} → {numbers['after']:.3f}"
        out.append((key, name))
    return out


def unchanged(table: pd.DataFrame) -> bool:
    """True when every fold's ``after`` bins equal its ``before`` bins: a checkpoint without
    calibration (T = 1) evaluated as calibrated, which the diagrams then say."""
    keys = ["fold", "level", "bin"]
    columns = ["confidence", "accuracy", "count"]
    before = table[table["calibration"] == "before"].set_index(keys)[columns].sort_index()
    after = table[table["calibration"] == "after"].set_index(keys)[columns].sort_index()
    return before.index.equals(after.index) and bool(np.allclose(before, after))


def reliability_html(table: pd.DataFrame, run_name: str) -> str:
    """The reliability diagrams of ``table`` (:func:`hmil.train.evaluate.read_reliability`'s
    rows, not empty) as one self-contained HTML page: plotly.js inlined (opens offline), the
    run's name and folds in the title, each level's ECE before → after in its panel title.

    Raises:
        ValueError: an empty ``table`` (nothing to draw).
    """
    if table.empty:
        raise ValueError("no reliability rows to draw")
    folds = ", ".join(str(f) for f in sorted({int(f) for f in table["fold"]}))
    note = (
        "a point per bin of a fold's test slides (larger for more slides; under the diagonal: "
        "more confident than right) · ECE: mean over the folds, 15 equal-mass bins of the "
        "top-label confidence"
    )
    if unchanged(table):
        note += "; checkpoint without calibration (T = 1): before = after"
    title = (
        f"Reliability diagrams of {text.plotly(run_name)}, fold(s) {folds}: before (raw) and "
        f"after calibration<br><sub>{note}</sub>"
    )
    fig = reliability_figure(table, ece_titles(table, CALIBRATION_LEVELS), title)
    fig.update_layout(height=520, margin={"l": 10, "r": 10, "t": 120, "b": 40})
    page = fig.to_html(include_plotlyjs=True, full_html=True)
    head = f"<head><title>Reliability diagrams: {html.escape(text.plain(run_name))}</title>"
    return page.replace("<head>", head, 1)
