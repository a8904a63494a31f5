"""The accuracy table's verdicts on hand-made summaries: each peer is met at its stronger recipe,
and a tie within the seeds' standard error is reported as a tie, not a win."""

from __future__ import annotations

import math

import pytest

from benchmarks import accuracy
from benchmarks.accuracy_verdicts import METRIC_NAMES, PeerRow, compare, standard_error, verdicts

HMIL = "HMIL defaults"
MB_PLAIN = "CLAM-MB (plain)"
MB_HMIL = "CLAM-MB (hmil recipe)"
AB_PLAIN = "ABMIL (plain)"
PEERS = {
    MB_PLAIN: PeerRow("CLAM-MB", "plain"),
    MB_HMIL: PeerRow("CLAM-MB", "hmil"),
    AB_PLAIN: PeerRow("ABMIL", "plain"),
}
ATTENTION = {"attention_auroc": 0.95, "other_rows_auroc": 0.70, "row_correlation": 0.2}


def row(value: float, std: float = 0.01, n: int = 5, **overrides: float) -> dict:
    """A summary row: every compared metric at ``value`` (``overrides`` per metric)."""
    stats = {m: {"mean": overrides.get(m, value), "std": std, "n": n} for m in METRIC_NAMES}
    for metric, mean in ATTENTION.items():
        stats[metric] = {"mean": mean, "std": 0.0, "n": n}
    return stats


def test_standard_error_of_a_difference_of_means():
    a, b = {"mean": 0.8, "std": 0.02, "n": 4}, {"mean": 0.7, "std": 0.03, "n": 9}
    assert standard_error(a, b) == pytest.approx(math.sqrt(0.02**2 / 4 + 0.03**2 / 9))


def test_each_metric_meets_the_stronger_recipe_of_the_peer():
    rows = {MB_PLAIN: row(0.70, fine_macro_auc=0.95), MB_HMIL: row(0.78, fine_macro_auc=0.90)}
    got = {c.metric: c for c in compare(row(0.80), rows, PEERS)}
    assert set(got) == set(METRIC_NAMES)
    assert got["fine_balanced_accuracy"].row == MB_HMIL
    assert got["fine_balanced_accuracy"].other == pytest.approx(0.78)
    assert got["fine_macro_auc"].row == MB_PLAIN  # the plain recipe is stronger there
    assert got["fine_macro_auc"].other == pytest.approx(0.95)


def test_ahead_by_more_than_the_standard_error_on_every_metric_is_a_win():
    summary = {"c": {HMIL: row(0.80), MB_PLAIN: row(0.70), MB_HMIL: row(0.75), AB_PLAIN: row(0.7)}}
    (line,) = verdicts(summary, HMIL, PEERS)
    assert "→ WIN: ahead of each on every metric by more than the standard error" in line
    assert "the stronger of each peer's plain and hmil-recipe rows (CLAM-MB, ABMIL;" in line
    assert "true row better" in line


def test_a_peer_that_catches_up_under_the_same_recipe_is_named_with_its_numbers():
    # SE of the difference: sqrt(2 · 0.02² / 5) ≈ 0.0126; 0.80 − 0.79 = 0.01 is within it
    rows = {HMIL: 0.80, MB_PLAIN: 0.70, MB_HMIL: 0.79, AB_PLAIN: 0.6}
    summary = {"gen-large": {name: row(mean, std=0.02) for name, mean in rows.items()}}
    (line,) = verdicts(summary, HMIL, PEERS)
    assert "WIN:" not in line
    assert "→ NO CLEAR WIN over CLAM-MB: CLAM-MB (hmil recipe) level on fine bacc: 0.790 vs " \
        "defaults 0.800 (SE 0.013)" in line  # fmt: skip
    assert "ABMIL (plain)" not in line  # ahead of ABMIL: not listed


def test_a_peer_ahead_beyond_the_standard_error_is_called_ahead():
    summary = {"c": {HMIL: row(0.80, std=0.0), MB_HMIL: row(0.80, std=0.0, coarse_macro_auc=0.9)}}
    (line,) = verdicts(summary, HMIL, PEERS)
    assert "AHEAD on coarse AUC: 0.900 vs defaults 0.800 (SE 0.000)" in line
    # equal means with no spread: a tie, not a win
    assert "level on fine bacc: 0.800 vs defaults 0.800" in line
    assert "each peer's hmil-recipe row (CLAM-MB;" in line


def test_peer_rows_on_fewer_seeds_make_the_verdict_provisional():
    summary = {"c": {HMIL: row(0.80), MB_PLAIN: row(0.70), MB_HMIL: row(0.75, std=0.0, n=1)}}
    (line,) = verdicts(summary, HMIL, PEERS)
    provisional = (
        "(provisional: peer rows on fewer seeds than the defaults' 5: CLAM-MB (hmil recipe) n=1)"
    )
    assert (
        f"→ WIN: ahead of each on every metric by more than the standard error {provisional}"
        in line
    )
    summary["c"][MB_HMIL] = row(0.75)
    assert "provisional" not in verdicts(summary, HMIL, PEERS)[0]


def test_tables_without_the_defaults_or_a_peer_get_no_verdict():
    summary = {"search": {HMIL: row(0.8)}, "ablation": {MB_PLAIN: row(0.7)}}
    assert verdicts(summary, HMIL, PEERS) == []


def test_the_table_pairs_every_peer_plain_row_with_its_hmil_recipe_row():
    by_peer: dict[str, set[str]] = {}
    for name, peer in accuracy.PEER_ROWS.items():
        by_peer.setdefault(peer.peer, set()).add(peer.recipe)
        if peer.recipe == "hmil":
            assert accuracy.HMIL_RECIPE in name  # the row's name says its recipe
    labels = ("flat gated", "ABMIL", "CLAM-MB", "CLAM-SB", "TransMIL", "DSMIL")
    assert by_peer == {label: {"plain", "hmil"} for label in labels}
    recipe_row = f"CLAM-MB ({accuracy.HMIL_RECIPE})"
    summary = {"gen-large": {accuracy.HMIL_DEFAULT: row(0.81), accuracy.CLAM_MB: row(0.79),
                             recipe_row: row(0.805, std=0.02)}}  # fmt: skip
    (line,) = accuracy.verdicts(summary)
    assert f"NO CLEAR WIN over CLAM-MB: CLAM-MB ({accuracy.HMIL_RECIPE}) level on" in line


def test_a_load_note_reaches_the_merged_header():
    machine = {"date": "2026-01-02", "host_cpu": "x", "cpu_count": 2, "torch_threads": 1,
               "python": "3.11", "torch": "2"}  # fmt: skip
    parts = [{"machine": machine}, {"machine": {**machine, "load": "shared, loaded machine"}}]
    info = accuracy._span(parts)
    assert info["load"] == "some parts: shared, loaded machine"
    text = accuracy.markdown({}, info, {}, {}, [])
    assert "Load while measuring: some parts: shared, loaded machine." in text
    assert "load" not in accuracy._span(parts[:1])


def test_a_difference_the_table_cannot_show_is_level_even_without_spread():
    # both rows at the ceiling with no spread over the seeds: SE 0, difference 0.0002
    summary = {"c": {HMIL: row(0.9995, std=0.0), MB_HMIL: row(0.9995, std=0.0, fine_macro_auc=1.0)}}
    (line,) = verdicts(summary, HMIL, PEERS)
    assert "level on fine AUC: 1.000 vs defaults 1.000 (SE 0.000)" in line
    assert "AHEAD" not in line
    # one unit of the last decimal is a difference
    summary["c"][MB_HMIL] = row(0.9995, std=0.0, fine_macro_auc=0.9985)
    (line,) = verdicts(summary, HMIL, PEERS)
    assert "fine AUC" not in line
