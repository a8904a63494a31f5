"""The calibration benchmark's further draw: same class directions as the cohort, new bags that
share no random number with the cohort's own bags, and a goal judged on the draw."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from benchmarks import calibration
from benchmarks.cohorts import BRACS_COUNTS, IMBALANCED, SMALL
from hmil.hierarchy import Hierarchy
from hmil.synthetic import CohortSpec, _blobs, _orthonormal, make_cohort


def _stream(spec: CohortSpec, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``make_cohort``'s loop step by step: each bag's ``(N, D)`` features and the ``(N, D)``
    noise drawn for it (the test checks the features against ``make_cohort``'s, so the noise
    is the generator's own)."""
    h = Hierarchy.preset("bracs")
    rng = np.random.default_rng(seed)
    dirs = _orthonormal(rng, h.n_coarse + h.n_fine + spec.n_background, spec.dim)
    u, v = dirs[: h.n_coarse], dirs[h.n_coarse : h.n_coarse + h.n_fine]
    background = dirs[h.n_coarse + h.n_fine :] * 2.0
    labels = (np.repeat(np.arange(h.n_fine), spec.class_counts) if spec.class_counts
              else np.arange(spec.n_slides) % h.n_fine)  # fmt: skip
    rng.shuffle(labels)
    features, noise = [], []
    for fine in labels:
        side = int(rng.integers(spec.grid_min, spec.grid_max + 1))
        n = side * side
        rows, cols = np.divmod(np.arange(n), side)
        key = _blobs(rng, rows, cols, side, max(1, round(spec.key_fraction * n)), spec.n_blobs)
        tissue = rng.integers(0, spec.n_background, size=n)
        z = rng.standard_normal((n, spec.dim))
        x = background[tissue] + spec.noise * z
        x[key] += spec.coarse_strength * u[h.parent[fine]] + spec.fine_strength * v[fine]
        features.append(x.astype(np.float32))
        noise.append(z)
    return features, noise


@pytest.mark.parametrize("spec", [SMALL, IMBALANCED], ids=["gen-small", "gen-imbalanced"])
def test_draw_shares_no_random_number_with_the_cohort(spec):
    name = "gen-small" if spec is SMALL else "gen-imbalanced"
    own_features, own_noise = _stream(spec, seed=1)
    cohort = make_cohort(Hierarchy.preset("bracs"), spec, seed=1)
    # the step-by-step loop is make_cohort's (else the noise below would not be the generator's)
    assert all(np.array_equal(b.features, x) for b, x in zip(cohort, own_features, strict=True))
    drawn = calibration.further_draw(name, seed=1, n_bags=40)
    assert drawn is not None
    bags, skipped = drawn
    assert skipped == math.ceil(calibration.DRAW_SKIP_FACTOR * spec.n_slides)
    big = calibration.draw_spec(spec, skipped + 40)
    big_features, big_noise = _stream(big, seed=1)
    assert all(np.array_equal(b.features, x)
               for b, x in zip(bags, big_features[skipped:], strict=True))  # fmt: skip
    seen = set(np.concatenate([z.ravel() for z in own_noise]).tolist())
    kept = np.concatenate([z.ravel() for z in big_noise[skipped:]]).tolist()
    assert not any(value in seen for value in kept)
    # without the skip the draw's first bags would reuse the cohort's numbers
    first = big_noise[0].ravel().tolist()
    assert sum(value in seen for value in first) > 0.5 * len(first)


def test_draw_keeps_the_class_directions_and_the_imbalance():
    spec = calibration.draw_spec(IMBALANCED, 2100)
    counts = np.array(spec.class_counts)
    assert spec.n_slides == counts.sum() == pytest.approx(2100, abs=len(BRACS_COUNTS))
    np.testing.assert_allclose(counts / counts.sum(),
                               np.array(BRACS_COUNTS) / sum(BRACS_COUNTS), atol=1e-3)  # fmt: skip
    # the same seed gives the same background directions: a bag's tissue instances sit near
    # the cohort's background prototypes, ±2 along one of them
    h = Hierarchy.preset("bracs")
    dirs = _orthonormal(np.random.default_rng(3), h.n_coarse + h.n_fine + SMALL.n_background,
                        SMALL.dim)  # fmt: skip
    background = dirs[h.n_coarse + h.n_fine :] * 2.0
    drawn = calibration.further_draw("gen-small", seed=3, n_bags=5)
    assert drawn is not None
    bag = drawn[0][0]
    tissue = bag.features[~bag.key_mask]
    nearest = ((tissue[:, None, :] - background[None]) ** 2).sum(-1).min(1)
    # noise 0.5 in 64 dimensions: squared distance ≈ 16 to the own prototype, ≈ 24 to others
    assert np.median(nearest) == pytest.approx(0.25 * SMALL.dim, rel=0.15)


def test_cohorts_without_a_generator_have_no_draw():
    assert calibration.further_draw("digits", 0, 100) is None
    assert calibration.further_draw("textures", 0, 100) is None


def _row(seed: int, test_ece: float, draw_ece: float | None) -> dict:
    row = {"seed": seed, "T_fine": 1.2, "fine.ece_after": test_ece}
    for pre in ("", "draw.") if draw_ece is not None else ("",):
        row |= {f"{pre}{lv}.bacc_{s}": 0.5 for lv in calibration.LEVELS
                for s in ("before", "after")}  # fmt: skip
    if draw_ece is not None:
        row |= {"draw.fine.ece_after": draw_ece, "draw.n": 2100}
    return row


def test_goal_is_judged_on_the_draw_when_every_seed_has_one():
    g = calibration.goal([_row(0, 0.14, 0.03), _row(1, 0.12, 0.04)])
    assert g["on_draw"] and g["holds"] and g["draw_n"] == 2100
    assert g["fine_ece_after"] == pytest.approx(0.035)
    assert g["test_fine_ece_after"] == pytest.approx(0.13) and g["test_seeds_meeting"] == 0
    assert calibration._verdict(g) == "HOLDS on the 2,100-bag draw (2/2 seeds ≤ 0.05)"
    mixed = calibration.goal([_row(0, 0.04, 0.03), _row(1, 0.06, None)])
    assert not mixed["on_draw"] and mixed["fine_ece_after"] == pytest.approx(0.05)
    bad = calibration.goal([_row(0, 0.14, 0.07)])
    assert calibration._verdict(bad) == (
        "DOES NOT HOLD on the 2,100-bag draw (0/1 seeds ≤ 0.05): ECE 0.020 above the goal"
    )
    # the calibrated sums Mᵀ p̂_f reordered: listed, but no product label moved
    moved = _row(2, 0.14, 0.04) | {"draw.coarse.bacc_after": 0.4994}
    g = calibration.goal([moved])
    assert g["holds"] and g["moved"][0]["part"] == "draw" and g["moved"][0]["level"] == "coarse"
    # a head's argmax cannot move with a temperature; if it did, the goal would fail
    lost = _row(2, 0.14, 0.04) | {"draw.coarse_head.bacc_after": 0.4994}
    g = calibration.goal([lost])
    assert not g["holds"]
    assert calibration._verdict(g) == (
        "DOES NOT HOLD on the 2,100-bag draw (1/1 seeds ≤ 0.05): balanced accuracy lost "
        "(coarse head (T_c); at most 0.0006, seed 2, draw part)"
    )


def test_draw_spec_of_a_balanced_cohort_only_changes_the_count():
    assert calibration.draw_spec(SMALL, 700) == dataclasses.replace(SMALL, n_slides=700)


def test_where_it_does_not_hold_names_a_balanced_accuracy_loss_when_the_ece_meets_the_goal():
    lost = _row(2, 0.14, 0.04) | {"draw.coarse_head.bacc_after": 0.4994}
    (line,) = calibration._why_lines({"gen-small": {"goal": calibration.goal([lost])}})[2:3]
    assert line.startswith("- gen-small: fine ECE after 0.040 on the 2,100-bag draw meets the "
                           "goal (1 of 1 seeds). Balanced accuracy fell")  # fmt: skip
    assert "in 1 of 1 seeds (coarse head (T_c), draw part; listed above)" in line
    moved = _row(2, 0.14, 0.04) | {"draw.coarse.bacc_after": 0.4994}
    assert calibration._why_lines({"gen-small": {"goal": calibration.goal([moved])}}) == []
    assert "above the goal" not in line
