"""Figures of the viewer: probability rows, and Plotly confusion matrices, ROC and training curves
(the reliability diagrams are :mod:`hmil.reliability_figure`'s, shared with ``hmil evaluate``).

Pure builders (data in, rows or a ``go.Figure`` out) so tests can inspect what is drawn. Class
names come from the run's hierarchy file: every one is shown through :mod:`.text` (HTML-escaped
in the probability bars, Plotly-escaped in ticks, legends and hover labels), so a name shows as
typed and cannot add a link, markup or a bidirectional override.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from viewer.core import text

#: kept under its old name for the pages that call ``charts.escape_markdown``
escape_markdown = text.markdown


@dataclass(frozen=True)
class ProbabilityRow:
    """One class of a level's probability bars: its name, probability and marks."""

    name: str
    probability: float
    predicted: bool
    truth: bool

    def html(self) -> str:
        """The class (bold when predicted), its probability and the truth mark over a bar as
        wide as the probability. Class names come from the run's hierarchy file, so they are
        HTML-escaped."""
        name = html.escape(text.plain(self.name))
        shown = f"<b>{name}</b>" if self.predicted else name
        mark = f' · <b style="color:{TRUTH_COLOUR}">truth</b>' if self.truth else ""
        percent = f"{100 * self.probability:.1f}"
        return (
            f'<div style="margin:0 0 0.55rem">{shown} {self.probability:.2f}{mark}'
            f'<div role="progressbar" aria-label="{name}" aria-valuenow="{percent}" '
            f'aria-valuemin="0" aria-valuemax="100" style="height:0.3rem;border-radius:0.15rem;'
            f'background:{TRACK_COLOUR};margin-top:0.2rem"><div style="width:{percent}%;'
            f'height:100%;border-radius:0.15rem;background:{BAR_COLOUR}"></div></div></div>'
        )


#: the bars' colours (Streamlit's default theme: primary blue on a light grey track)
BAR_COLOUR = "#1c83e1"
TRACK_COLOUR = "#e6eaf1"
TRUTH_COLOUR = "#21803a"


def probability_html(levels: Sequence[tuple[str, Sequence[ProbabilityRow]]]) -> str:
    """Every level's bars as one HTML block under its title (escaped). One element for the
    page instead of a progress bar per class: the browser renders each Streamlit element
    through React on every page load, and ~15 fewer of them were ~0.1 s of a first render on
    2 cores (measured)."""
    parts = []
    for title, rows in levels:
        parts.append(f'<p style="margin:0 0 0.4rem"><b>{html.escape(text.plain(title))}</b></p>')
        parts.extend(row.html() for row in rows)
    return f'<div class="hmil-probabilities">{"".join(parts)}</div>'


def probability_rows(
    names: Sequence[str], probs: np.ndarray, truth: str | None
) -> list[ProbabilityRow]:
    """One level's classes in hierarchy order with their probabilities, the argmax marked
    as predicted and the true class (if known) as truth. The slide page draws these as
    Streamlit progress bars: a Plotly chart per level cost the browser ~1–2 s of main-thread
    work per page load on 2 cores (measured), for three small bar charts."""
    values = np.asarray(probs, dtype=float).reshape(-1)
    if len(values) != len(names):
        raise ValueError(f"{len(names)} class names but {len(values)} probabilities")
    best = int(np.argmax(values))
    return [
        ProbabilityRow(str(n), float(min(max(v, 0.0), 1.0)), i == best, n == truth)
        for i, (n, v) in enumerate(zip(names, values, strict=True))
    ]


def confusion_figure(counts: np.ndarray, classes: Sequence[str], title: str) -> go.Figure:
    """Confusion matrix (rows true, columns predicted) as a heatmap with counts, plus invisible
    square markers at the cell centres so a click selects the cell
    (``st.plotly_chart(on_select=...)`` reports points of scatter traces).

    The categories are the class names as they are, so a click reports the real name; what
    is drawn of them (ticks, hover) is their :func:`text.plotly` form."""
    k = len(classes)
    names = list(classes)
    shown = [text.plotly(n) for n in names]
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=names,
            y=names,
            colorscale="Blues",
            zmin=0,
            zmax=1,
            text=counts.astype(int),
            texttemplate="%{text}",
            hoverinfo="skip",  # hover and clicks go to the marker layer (selectable)
            colorbar={"title": "row share"},
        )
    )
    xs, ys = np.meshgrid(np.arange(k), np.arange(k))
    ticks = {"tickmode": "array", "tickvals": names, "ticktext": shown}
    hover = [
        f"true {shown[j]}, predicted {shown[i]}"
        for i, j in zip(xs.ravel(), ys.ravel(), strict=True)
    ]
    fig.add_trace(
        go.Scatter(
            x=[names[i] for i in xs.ravel()],
            y=[names[j] for j in ys.ravel()],
            mode="markers",
            marker={"symbol": "square", "size": 28, "opacity": 0.01, "color": "#000"},
            customdata=counts.ravel().astype(int),
            text=hover,
            hovertemplate="%{text}: %{customdata} — click to list<extra></extra>",
            showlegend=False,
        )
    )
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        xaxis={"title": "predicted", "type": "category", **ticks},
        yaxis={"title": "true", "type": "category", "autorange": "reversed", **ticks},
        height=120 + 40 * k,
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
    )  # no clickmode/dragmode here: Streamlit sets its own, and ours stopped click-selection
    return fig


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str) -> go.Figure:
    """One-vs-rest ROC curve per class: ``name -> (fpr, tpr, auc)``."""
    fig = go.Figure()
    for name, (fpr, tpr, auc) in curves.items():
        shown = text.plotly(name)
        label = f"{shown} (AUC {auc:.2f})" if np.isfinite(auc) else f"{shown} (AUC n/a)"
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=label))
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            line={"dash": "dot", "color": "#999"},
            name="chance",
            hoverinfo="skip",
        )
    )
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        xaxis={"title": "false positive rate", "range": [0, 1]},
        yaxis={"title": "true positive rate", "range": [0, 1.02]},
        height=380,
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
    )
    return fig


FOLD_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
SERIES_DASH = {
    "train loss": "solid",
    "val loss": "dash",
    "val fine bal. acc": "solid",
    "val fine AUC": "dash",
    "val coarse bal. acc": "dot",
}


def curves_figure(curves: pd.DataFrame, title: str) -> go.Figure:
    """Training curves, losses left and validation metrics right; one colour per fold, one
    dash style per series. ``curves`` has columns ``fold, epoch, series, value, kind`` (kind
    ``loss`` or ``metric``)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "validation metrics"))
    for (fold, series, kind), part in curves.groupby(["fold", "series", "kind"], sort=True):
        colour = FOLD_COLOURS[int(cast(int, fold)) % len(FOLD_COLOURS)]  # groupby key: Hashable
        fig.add_trace(
            go.Scatter(
                x=part["epoch"],
                y=part["value"],
                mode="lines+markers",
                name=f"fold {fold} · {series}",
                line={"color": colour, "dash": SERIES_DASH.get(str(series), "solid")},
                marker={"size": 5},
            ),
            row=1,
            col=2 if kind == "metric" else 1,
        )
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=380,
        margin={"l": 10, "r": 10, "t": 60, "b": 40},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def patch_attention_figure(rows: pd.DataFrame, title: str) -> go.Figure:
    """Percentile of one patch's attention under every label, grouped by level."""
    fig = go.Figure()
    for level, part in rows.groupby("level", sort=False):
        fig.add_trace(
            go.Bar(
                x=[text.plotly(label) for label in part["label"]],
                y=part["percentile"],
                name=text.plotly(level),
                customdata=np.stack([part["attention"], part["x_uniform"]], axis=1),
                hovertemplate="%{x}: percentile %{y:.1f}<br>attention %{customdata[0]:.4g}"
                " (×%{customdata[1]:.2f} uniform)<extra></extra>",
            )
        )
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        yaxis={"title": "percentile of this patch", "range": [0, 100]},
        height=280,
        margin={"l": 10, "r": 10, "t": 40, "b": 30},
        barmode="group",
    )
    return fig
