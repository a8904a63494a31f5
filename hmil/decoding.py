"""From the two heads' probabilities to per-level predictions, flagging inconsistencies.

Default (the released evaluation): fine prediction = argmax p_f; coarse probabilities =
Mᵀ p_f (fine probabilities summed per parent) and coarse prediction = their argmax. These can
disagree (fine 0.3/0.3/0.4 with the first two under one parent); such slides are *flagged*
(``consistent = False``), never silently changed. ``top_down`` decoding (coarse argmax first,
then the best fine class inside it) is offered as an option and is consistent by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hmil.hierarchy import Hierarchy

DECODINGS = ("fine_sum", "top_down")


@dataclass
class Decoded:
    """Predictions for S slides.

    Attributes:
        fine_probs: ``(S, Kf)``.
        coarse_probs: ``(S, Kc)`` = fine_probs @ M.
        coarse_head_probs: ``(S, Kc)`` from the coarse head (None if not available).
        fine_pred: ``(S,)`` fine class indices.
        coarse_pred: ``(S,)`` argmax of ``coarse_probs``.
        coarse_head_pred: ``(S,)`` argmax of the coarse head (or None).
        consistent: ``(S,)`` bool, parent(fine_pred) == coarse_pred.
        decoding: which rule produced ``fine_pred``/``coarse_pred``.
    """

    fine_probs: np.ndarray
    coarse_probs: np.ndarray
    coarse_head_probs: np.ndarray | None
    fine_pred: np.ndarray
    coarse_pred: np.ndarray
    coarse_head_pred: np.ndarray | None
    consistent: np.ndarray
    decoding: str


def decode(
    fine_probs: np.ndarray,
    hierarchy: Hierarchy,
    coarse_head_probs: np.ndarray | None = None,
    decoding: str = "fine_sum",
) -> Decoded:
    """Decode ``(S, Kf)`` fine probabilities (and optional ``(S, Kc)`` coarse-head ones)."""
    if decoding not in DECODINGS:
        raise ValueError(f"unknown decoding '{decoding}' (expected one of {DECODINGS})")
    p_f = np.asarray(fine_probs, dtype=np.float64).reshape(-1, hierarchy.n_fine)
    p_c = p_f @ hierarchy.mapping.astype(np.float64)
    parent = np.asarray(hierarchy.parent)
    coarse_pred = p_c.argmax(axis=1)
    if decoding == "fine_sum":
        fine_pred = p_f.argmax(axis=1)
    else:
        inside = np.where(parent[None, :] == coarse_pred[:, None], p_f, -np.inf)
        fine_pred = inside.argmax(axis=1)
    head = None if coarse_head_probs is None else np.asarray(coarse_head_probs, dtype=np.float64)
    return Decoded(
        fine_probs=p_f,
        coarse_probs=p_c,
        coarse_head_probs=head,
        fine_pred=fine_pred,
        coarse_pred=coarse_pred,
        coarse_head_pred=None if head is None else head.argmax(axis=1),
        consistent=parent[fine_pred] == coarse_pred,
        decoding=decoding,
    )
