"""Level metrics against scikit-learn, and the epoch-selection rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from hmil.train.loop import _Selection, selection_score
from hmil.train.metrics import level_metrics

NAMES = tuple(f"c{k}" for k in range(5))


def _random_case(seed: int, missing: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    present = [k for k in range(5) if k not in missing]
    y = rng.choice(present, size=40)
    probs = rng.dirichlet(np.ones(5), size=40)
    return y, probs


@pytest.mark.parametrize("missing", [(), (3,), (1, 4)])
def test_level_metrics_equal_scikit_learn(missing):
    y, probs = _random_case(7, missing)
    pred = probs.argmax(1)
    got = level_metrics(y, probs, NAMES)
    labels = list(range(5))
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    # macro-F1 over every class of the level, not only those present in y_true
    want_f1 = f1_score(y, pred, labels=labels, average="macro", zero_division=0)
    assert got["macro_f1"] == pytest.approx(want_f1)
    if missing:  # the old behaviour (classes of y_true only) gives a different number
        only_present = f1_score(y, pred, labels=sorted(set(y)), average="macro", zero_division=0)
        assert not math.isclose(got["macro_f1"], only_present)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    for k, name in enumerate(NAMES):
        assert got["per_class"][name]["precision"] == pytest.approx(p[k])
        assert got["per_class"][name]["recall"] == pytest.approx(r[k])
        assert got["per_class"][name]["f1"] == pytest.approx(f[k])
        assert got["per_class"][name]["support"] == s[k]
        if k in missing:
            assert math.isnan(got["per_class"][name]["auc"])
        else:
            assert got["per_class"][name]["auc"] == pytest.approx(
                roc_auc_score(y == k, probs[:, k])
            )
    defined = [roc_auc_score(y == k, probs[:, k]) for k in range(5) if k not in missing]
    assert got["macro_auc"] == pytest.approx(np.mean(defined))
    assert got["confusion_matrix"] == confusion_matrix(y, pred, labels=labels).tolist()


def test_selection_prefers_higher_score_then_lower_loss():
    s = _Selection()
    assert s.update(0.5, 1.0, 0)  # first epoch is always kept
    assert not s.update(0.4, 0.1, 1)
    assert s.update(0.5, 0.9, 2)  # tie on the score, lower validation loss
    assert not s.update(0.5, 0.95, 3)
    assert s.update(0.7, 5.0, 4)
    assert (s.best_epoch, s.best_score) == (4, 0.7)
    assert not s.update(float("nan"), 0.0, 5)  # a NaN score never wins


def test_selection_score_rules():
    record = {"n": 4, "fine": {"macro_auc": float("nan"), "balanced_accuracy": 0.25,
                               "macro_f1": 0.2}}  # fmt: skip
    assert selection_score(record, 1.3, "fine_auc", 3) == 0.25  # AUC undefined → bacc
    assert selection_score(record, 1.3, "val_loss", 3) == -1.3
    assert selection_score(record, 1.3, "fine_macro_f1", 3) == 0.2
    assert selection_score(record, 1.3, "last", 3) == 3.0
    assert selection_score({"n": 0}, math.inf, "fine_auc", 3) == -math.inf
    s = _Selection()  # with 'last' the epoch index always improves: the last epoch is kept
    for epoch in range(4):
        assert s.update(selection_score({"n": 0}, math.inf, "last", epoch), math.inf, epoch)
    assert s.best_epoch == 3
