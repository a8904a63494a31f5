"""The accuracy table's verdict: are the HMIL defaults ahead of every flat peer, recipe for recipe?

A peer's plain row (its own recipe: cosine schedule, no class balancing, no weight average) and
its row under the HMIL defaults' recipe (the same weight average and class balancing as the
defaults) differ only in training recipe, so the defaults are compared with the *stronger* of
the two on each metric. Otherwise the comparison partly measures the recipe: a win over a peer
that never got the weight average or the balanced sampler says little about the model.

"Ahead" means ahead by more than the standard error of the difference of the two means over
the seeds, ``sqrt(s_a² / n_a + s_b² / n_b)`` (sample stds; the seeds are treated as
independent, which is conservative, as both rows of a seed share its cohort and split); a
difference within it is a tie, and the verdict says so plainly instead of counting it as a win.
So is a difference below :data:`RESOLUTION`, which the table's three decimals cannot show (two
rows at the ceiling, 1.000 ± 0.000, have a standard error of almost 0).

Works on the summaries of :func:`benchmarks.accuracy.summarise`:
``{cohort: {row: {metric: {"mean", "std", "n"}}}}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Stats = Mapping[str, Mapping[str, float]]

#: the level metrics compared, with the table's short names
METRIC_NAMES: dict[str, str] = {
    "fine_balanced_accuracy": "fine bacc",
    "fine_macro_f1": "fine F1",
    "fine_macro_auc": "fine AUC",
    "coarse_balanced_accuracy": "coarse bacc",
    "coarse_macro_f1": "coarse F1",
    "coarse_macro_auc": "coarse AUC",
}


#: the smallest difference of two means that counts: half a unit of the table's last decimal
RESOLUTION = 0.0005


@dataclass(frozen=True)
class PeerRow:
    """A row of the table that is a flat peer: which peer, under which recipe."""

    peer: str  # e.g. "clam_mb" (benchmarks.peers)
    recipe: str  # "plain" or "hmil" (benchmarks.peers.RECIPES)


@dataclass(frozen=True)
class Comparison:
    """The defaults against one peer's stronger row on one metric."""

    peer: str
    row: str  # the stronger of the peer's rows on this metric (its name says the recipe)
    metric: str
    hmil: float
    other: float
    se: float  # standard error of the difference of the means

    @property
    def outcome(self) -> str:
        """``ahead`` (the defaults, by more than ``se`` and :data:`RESOLUTION`), ``level``
        or ``behind``."""
        diff = self.hmil - self.other
        margin = max(self.se, RESOLUTION)
        if diff > margin:
            return "ahead"
        return "behind" if diff < -margin else "level"


def standard_error(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Standard error of ``mean(a) − mean(b)`` from two ``{mean, std, n}`` summaries."""
    return math.sqrt(a["std"] ** 2 / max(a["n"], 1) + b["std"] ** 2 / max(b["n"], 1))


def compare(
    hmil: Stats, rows: Mapping[str, Stats], peers: Mapping[str, PeerRow]
) -> list[Comparison]:
    """Per peer present in ``rows`` and per metric of :data:`METRIC_NAMES`: the defaults
    (``hmil``) against the peer row (any recipe) with the higher mean; peers in the order of
    their first row in ``rows``."""
    by_peer: dict[str, list[str]] = {}
    for name in rows:
        if name in peers:
            by_peer.setdefault(peers[name].peer, []).append(name)
    out = []
    for peer, names in by_peer.items():
        for metric in METRIC_NAMES:
            have = [n for n in names if metric in rows[n]]
            if metric not in hmil or not have:
                continue
            best = max(have, key=lambda n: rows[n][metric]["mean"])
            other = rows[best][metric]
            out.append(
                Comparison(peer, best, metric, hmil[metric]["mean"], other["mean"],
                           standard_error(hmil[metric], other))
            )  # fmt: skip
    return out


def _not_ahead(comparisons: Iterable[Comparison]) -> str:
    """``row level on fine bacc: 0.801 vs defaults 0.813 (SE 0.012), …; row AHEAD on …``."""
    per_row: dict[str, list[str]] = {}
    for c in comparisons:
        word = "level on" if c.outcome == "level" else "AHEAD on"
        per_row.setdefault(c.row, []).append(
            f"{word} {METRIC_NAMES[c.metric]}: {c.other:.3f} vs defaults {c.hmil:.3f} "
            f"(SE {c.se:.3f})"
        )
    return "; ".join(f"{row} {', '.join(items)}" for row, items in per_row.items())


def verdict_line(
    cohort: str, hmil: Stats, rows: Mapping[str, Stats], peers: Mapping[str, PeerRow]
) -> str:
    """One cohort's verdict: WIN only when the defaults are ahead of every peer's stronger row
    on every metric by more than the standard error; else which peer rows tie or lead, and on
    what. Then the defaults' attention: does the true row localise better than the others?"""
    comparisons = compare(hmil, rows, peers)
    compared = list(dict.fromkeys(c.peer for c in comparisons))
    recipes = sorted({peers[n].recipe for n in rows if n in peers})
    fair = ("the stronger of each peer's plain and hmil-recipe rows" if len(recipes) > 1
            else f"each peer's {recipes[0]}-recipe row")  # fmt: skip
    open_ = [c for c in comparisons if c.outcome != "ahead"]
    if not open_:
        result = "WIN: ahead of each on every metric by more than the standard error"
    else:
        caught = {c.peer for c in open_}
        head = "NO CLEAR WIN over " + ", ".join(p for p in compared if p in caught)
        result = f"{head}: {_not_ahead(open_)}"
    seeds = _seeds(hmil)
    few = [f"{n} n={_seeds(rows[n])}" for n in rows if n in peers and _seeds(rows[n]) < seeds]
    if few:  # a mean over other seeds' cohorts, and a std of 0 from one seed: not yet a verdict
        result += f" (provisional: peer rows on fewer seeds than the defaults' {seeds}: "
        result += "; ".join(few) + ")"
    fine = _mean(hmil, "fine_balanced_accuracy")
    true_row = _mean(hmil, "attention_auroc")
    others = _mean(hmil, "other_rows_auroc")
    corr = _mean(hmil, "row_correlation")
    attention = "true row better" if true_row > others else "true row NOT better"
    return (
        f"{cohort}: defaults fine bacc {fine:.3f} vs {fair} "
        f"({', '.join(compared)}; fine and coarse bacc, macro-F1, macro AUC) → {result}; "
        f"attention true row {true_row:.3f} vs other rows {others:.3f} ({attention}), "
        f"row correlation {corr:.3f}"
    )


def verdicts(
    summary: Mapping[str, Mapping[str, Stats]], hmil_row: str, peers: Mapping[str, PeerRow]
) -> list[str]:
    """:func:`verdict_line` for every cohort of ``summary`` with the ``hmil_row`` and at least
    one peer row (a search or ablation table has nothing to compare against)."""
    out = []
    for cohort, rows in summary.items():
        hmil = rows.get(hmil_row)
        if hmil and any(name in peers for name in rows):
            out.append(verdict_line(cohort, hmil, rows, peers))
    return out


def _seeds(stats: Stats) -> int:
    """How many seeds a row's fine balanced accuracy averages (0 when it has none)."""
    return int(stats.get("fine_balanced_accuracy", {}).get("n", 0))


def _mean(stats: Stats, metric: str) -> Any:
    return stats.get(metric, {}).get("mean", float("nan"))
