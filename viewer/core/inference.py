"""One slide's prediction in the form the slide page draws: plain numpy arrays, picklable.

:class:`SlideResult` is what :func:`viewer.components.cached_ui.slide_result` caches per
(checkpoint, bag) pair, so switching label, level or viewport never re-runs the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hmil.conformal import min_calibration_size
from hmil.data.bags import infer_patch_size
from hmil.predict import Prediction, Predictor

LEVELS = ("coarse", "fine")


@dataclass(frozen=True)
class SlideCall:
    """The hierarchical call of a slide (:mod:`hmil.conformal`): ``level`` ``fine``,
    ``coarse`` or ``none``, the ``label`` called (None for ``none``) and the target coverage."""

    level: str
    label: str | None
    coverage_target: float
    n_calibration: int | None = None

    def words(self) -> str:
        """``fine: ADH``, ``atypical — subtype uncertain`` or ``no call``."""
        return call_words(self.level, self.label)

    def sentence(self) -> str:
        """``Call at 90 % coverage: atypical — subtype uncertain`` (label as typed)."""
        return f"Call at {100 * self.coverage_target:.0f} % coverage: {self.words()}"

    def limit_note(self) -> str:
        """Why there is no call when the cause is the validation part, not the slide: with
        fewer validation bags than :func:`hmil.conformal.min_calibration_size` the guarantee
        cannot be met by any answer (``""`` otherwise)."""
        if self.level != "none" or self.n_calibration is None:
            return ""
        needed = min_calibration_size(self.coverage_target)
        if self.n_calibration >= needed:
            return ""
        return (
            f"the model's {self.n_calibration} validation slides cannot support a "
            f"{100 * self.coverage_target:.0f} % guarantee (at least {needed} needed), so no "
            "slide gets a call; this says nothing about this slide"
        )


#: what a call of each level says, ``{label}`` filled in
CALL_WORDS = {"fine": "fine: {label}", "coarse": "{label} — subtype uncertain", "none": "no call"}


def call_words(level: str, label: str | None) -> str:
    """A call in words (:data:`CALL_WORDS`); ``""`` for an unknown level (no call recorded)."""
    template = CALL_WORDS.get(str(level))
    return "" if template is None else template.format(label=label or "")


@dataclass(frozen=True)
class SlideResult:
    """Prediction + class-wise attention of one bag.

    Attributes:
        slide_id: bag id.
        coarse: coarse class names (Kc).
        fine: fine class names (Kf).
        parent: ``(Kf,)`` coarse index of each fine class.
        fine_probs: ``(Kf,)`` fine head softmax.
        coarse_probs: ``(Kc,)`` Mᵀ p_f (fine probabilities summed per coarse class).
        coarse_head_probs: ``(Kc,)`` the coarse head's own softmax.
        attention_coarse: ``(Kc, N)`` float32, each row sums to 1 over the N patches.
        attention_fine: ``(Kf, N)`` float32.
        coords: ``(N, 2)`` int64 level-0 top-left corners, or None when the bag has none.
        patch_size: level-0 patch side (stored in the bag or inferred from the coords grid).
        encoder: encoder name stored with the bag ('' if none).
        bag_attrs: the bag's scalar attributes (slide name, level-0 size, MPP, encoder…), what
            the bag-on-slide check reads.
        calibrated: True when the probabilities are temperature-scaled with the checkpoint's
            calibration (False: raw, a checkpoint without one).
        temperatures: ``(T_f, T_c)`` of the fine and the coarse head (1: unscaled).
        call: the hierarchical call, or None for a checkpoint without conformal scores.
        raw_coarse_probs: ``(Kc,)`` Mᵀ p_f of the raw fine probabilities when the shown ones
            are calibrated (None otherwise): the coarse prediction is read from them, as
            :attr:`hmil.predict.Prediction.coarse_pred` and the fold's ``predictions.csv`` do.
    """

    slide_id: str
    coarse: tuple[str, ...]
    fine: tuple[str, ...]
    parent: tuple[int, ...]
    fine_probs: np.ndarray
    coarse_probs: np.ndarray
    coarse_head_probs: np.ndarray
    attention_coarse: np.ndarray
    attention_fine: np.ndarray
    coords: np.ndarray | None
    patch_size: int
    encoder: str = ""
    bag_attrs: dict[str, object] = field(default_factory=dict)
    calibrated: bool = False
    temperatures: tuple[float, float] = (1.0, 1.0)
    call: SlideCall | None = None
    raw_coarse_probs: np.ndarray | None = None

    @property
    def n_instances(self) -> int:
        return int(self.attention_fine.shape[1])

    def names(self, level: str) -> tuple[str, ...]:
        return self.coarse if level == "coarse" else self.fine

    def attention(self, level: str) -> np.ndarray:
        """``(K_level, N)`` attention of ``level``."""
        return self.attention_coarse if level == "coarse" else self.attention_fine

    def scores(self, level: str, label: str) -> np.ndarray:
        """``(N,)`` attention of one class."""
        return self.attention(level)[self.names(level).index(label)]

    @property
    def fine_pred(self) -> str:
        return self.fine[int(np.argmax(self.fine_probs))]

    @property
    def coarse_pred(self) -> str:
        decide = self.coarse_probs if self.raw_coarse_probs is None else self.raw_coarse_probs
        return self.coarse[int(np.argmax(decide))]

    @property
    def coarse_head_pred(self) -> str:
        return self.coarse[int(np.argmax(self.coarse_head_probs))]

    @property
    def consistent(self) -> bool:
        """The coarse prediction (Mᵀ p_f) is the parent of the fine prediction."""
        return self.coarse[self.parent[int(np.argmax(self.fine_probs))]] == self.coarse_pred

    @property
    def heads_agree(self) -> bool:
        """The coarse head picks the same class as the fine head summed per coarse class."""
        return self.coarse_head_pred == self.coarse_pred


def from_prediction(
    pred: Prediction,
    temperatures: tuple[float, float] = (1.0, 1.0),
    n_calibration: int | None = None,
) -> SlideResult:
    """Convert a :class:`hmil.predict.Prediction` made with ``attention=True``;
    ``temperatures`` ``(T_f, T_c)`` are the predictor's (shown when ``pred.calibrated``),
    ``n_calibration`` the number of validation bags its call was calibrated on."""
    if pred.attention is None:
        raise ValueError("prediction was made without attention")
    h = pred.hierarchy
    coords = None if pred.coords is None else np.asarray(pred.coords, dtype=np.int64)
    attrs = pred.bag_attrs or {}
    patch = infer_patch_size(coords, attrs, pred.slide_id) if coords is not None else 256
    return SlideResult(
        slide_id=pred.slide_id,
        coarse=tuple(h.coarse),
        fine=tuple(h.fine),
        parent=tuple(int(p) for p in h.parent),
        fine_probs=np.asarray(pred.fine_probs, dtype=np.float64),
        coarse_probs=np.asarray(pred.coarse_probs, dtype=np.float64),
        coarse_head_probs=np.asarray(pred.coarse_head_probs, dtype=np.float64),
        attention_coarse=np.asarray(pred.attention["coarse"], dtype=np.float32),
        attention_fine=np.asarray(pred.attention["fine"], dtype=np.float32),
        coords=coords,
        patch_size=int(patch),
        encoder=str(attrs.get("encoder", "")),
        bag_attrs=scalar_attrs(attrs),
        calibrated=bool(pred.calibrated),
        temperatures=(float(temperatures[0]), float(temperatures[1])),
        call=None
        if pred.call is None
        else SlideCall(
            str(pred.call["level"]),
            None if pred.call.get("label") is None else str(pred.call["label"]),
            float(pred.call["coverage_target"]),
            n_calibration,
        ),
        raw_coarse_probs=None
        if pred.raw_fine_probs is None
        else np.asarray(pred.raw_fine_probs @ h.mapping, dtype=np.float64),
    )


def scalar_attrs(attrs: dict[str, object]) -> dict[str, object]:
    """The str / int / float / bool attributes of a bag as plain Python values (arrays and
    other objects are left out: the page needs the slide fields only)."""
    out: dict[str, object] = {}
    for name, value in attrs.items():
        item = value.item() if isinstance(value, np.generic) else value
        if isinstance(item, bytes):
            item = item.decode("utf-8", errors="replace")
        if isinstance(item, str | int | float | bool):
            out[str(name)] = item
    return out


def predict_slide(predictor: Predictor, bag: Path, slide_id: str | None = None) -> SlideResult:
    """Run the model on one bag with class-wise attention (raises BagError for a bad bag);
    the probabilities are calibrated when the checkpoint has a calibration."""
    cal = predictor.calibration
    temperatures = (cal.fine_temperature, cal.coarse_temperature)
    n_cal = None if cal.fine_scores is None else len(cal.fine_scores)
    prediction = predictor.predict(bag, attention=True, slide_id=slide_id)
    return from_prediction(prediction, temperatures, n_cal)


def patch_attention_rows(result: SlideResult, index: int) -> list[dict[str, object]]:
    """Attention of patch ``index`` under every label of both levels.

    Each row: ``level``, ``label``, ``attention`` (the softmax weight), ``× average patch``
    (attention × N: 1.0 is exactly an average patch's share, the slide page's default scale)
    and ``percentile`` (share of the slide's patches with a lower score for that label,
    0..100).
    """
    rows: list[dict[str, object]] = []
    n = result.n_instances
    for level in LEVELS:
        att = result.attention(level)
        for k, name in enumerate(result.names(level)):
            row = att[k]
            value = float(row[index])
            rows.append(
                {
                    "level": level,
                    "label": name,
                    "attention": value,
                    TIMES_AVERAGE: value * n,
                    "percentile": 100.0 * float((row < value).sum()) / max(1, n - 1),
                }
            )
    return rows


#: the column of :func:`patch_attention_rows` with attention × N
TIMES_AVERAGE = "× average patch"
