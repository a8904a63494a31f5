"""What to tell a viewer about a model: its name, whether it saw only SYNTHETIC data, and
whether a bag's features are the ones it was trained on.

A heatmap from a model trained on generated slides looks just as convincing as one from a real
model, so anything showing a model's output says where the model came from. The facts come from
files already there, nothing is written:

* the display name: the first heading of ``MODEL_CARD.md`` beside the checkpoint (what ``hmil
  demo`` ships), else ``<run> · fold k`` for ``RUN/fold_k/checkpoint.pt``, else the file stem;
* SYNTHETIC: the model card's first heading says ``SYNTHETIC`` (the shipped demo checkpoint), or
  the training config's data is a SYNTHETIC cohort (:func:`synthetic_cohort_reason`, the rule
  the viewer applies to runs). A checkpoint that records none of this reads as not synthetic;
* the encoder mismatch: :func:`hmil.data.provenance.encoder_mismatch`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hmil.data.provenance import encoder_mismatch

if TYPE_CHECKING:
    from hmil.checkpoint import CheckpointInfo

#: the model card ``hmil demo`` writes beside the checkpoint it ships
MODEL_CARD = "MODEL_CARD.md"
#: the file that marks a cohort folder as SYNTHETIC (``hmil demo``, :mod:`hmil.synthetic`)
SYNTHETIC_MARK = "README_SYNTHETIC.txt"
#: encoder names of generated features (:mod:`hmil.synthetic` writes ``synthetic``)
SYNTHETIC_ENCODER_PREFIX = "synthetic"
#: config ``data`` keys whose folder (the file's parent) may hold :data:`SYNTHETIC_MARK`
COHORT_KEYS = ("labels", "features")
#: how much of a model card is read looking for its first heading
CARD_BYTES = 64 * 1024

_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(?P<text>.+?)\s*#*\s*$")
_SYNTHETIC_WORD = re.compile(r"\bSYNTHETIC\b")
_FOLD_DIR = re.compile(r"^fold_(?P<k>\d+)$")
#: run folder names too plain to tell runs apart (the folder above is named with them)
GENERIC_RUN_NAMES = frozenset({"run", "runs", "out", "output"})


@dataclass(frozen=True)
class ModelProvenance:
    """What a viewer shows beside a model's output.

    Attributes:
        display_name: the model's name for people (see :func:`model_display_name`).
        synthetic: the model was trained on SYNTHETIC data only.
        synthetic_reason: why it reads as synthetic (one phrase), None when it does not.
        encoder_mismatch: the warning when the bag's features come from another encoder than
            the model's, None when they match or either is unknown.
        card: the model card beside the checkpoint, None without one.
    """

    display_name: str
    synthetic: bool
    synthetic_reason: str | None
    encoder_mismatch: str | None
    card: Path | None


def model_provenance(
    checkpoint: str | Path,
    info: CheckpointInfo,
    bag_attrs: Mapping[str, object] | None = None,
) -> ModelProvenance:
    """The facts about the model in ``checkpoint`` (already loaded: ``Predictor.info``).

    Args:
        checkpoint: the checkpoint file (its folder holds the model card, its path names the
            run and fold).
        info: what the checkpoint says about itself (:class:`hmil.checkpoint.CheckpointInfo`).
        bag_attrs: the attributes of the bag being shown (``Prediction.bag_attrs``); None
            skips the encoder comparison.
    """
    path = Path(checkpoint)
    card = model_card_path(path)
    reason = synthetic_reason(path, info.config, info.encoder)
    return ModelProvenance(
        display_name=model_display_name(path),
        synthetic=reason is not None,
        synthetic_reason=reason,
        encoder_mismatch=None if bag_attrs is None else encoder_mismatch(info.encoder, bag_attrs),
        card=card,
    )


def model_card_path(checkpoint: str | Path) -> Path | None:
    """``MODEL_CARD.md`` beside ``checkpoint``, None when there is none."""
    card = Path(checkpoint).parent / MODEL_CARD
    return card if _is_file(card) else None


def card_title(card: str | Path) -> str | None:
    """The text of the first Markdown heading of a model card, None without one (or unreadable)."""
    try:
        with open(card, encoding="utf-8", errors="replace") as f:
            text = f.read(CARD_BYTES)
    except OSError:
        return None
    for line in text.splitlines():
        heading = _HEADING.match(line)
        if heading is not None:
            return heading["text"]
    return None


def model_display_name(checkpoint: str | Path) -> str:
    """The model's name for people: the model card's first heading, else ``<run> · fold k``
    for ``RUN/fold_k/<file>``, else the file stem.

    >>> model_display_name("runs/bracs-abmil/fold_2/checkpoint.pt")
    'bracs-abmil · fold 2'
    """
    path = Path(checkpoint).absolute()
    card = model_card_path(path)
    title = card_title(card) if card is not None else None
    if title:
        return title
    fold = _FOLD_DIR.match(path.parent.name)
    run = path.parent.parent
    if fold is not None and run.name:
        # a run folder named like hmil demo's ("run") says nothing alone: add its parent
        name = f"{run.parent.name}/{run.name}" if run.name in GENERIC_RUN_NAMES else run.name
        return f"{name} · fold {int(fold['k'])}"
    return path.stem


def synthetic_reason(
    checkpoint: str | Path, config: Mapping[str, object] | None, encoder: str = ""
) -> str | None:
    """Why the model in ``checkpoint`` counts as trained on SYNTHETIC data, None when nothing
    says so.

    Args:
        checkpoint: the checkpoint file (its model card is read).
        config: the training config stored in the checkpoint (``CheckpointInfo.config``).
        encoder: the checkpoint's encoder name (``CheckpointInfo.encoder``).
    """
    card = model_card_path(checkpoint)
    title = card_title(card) if card is not None else None
    if title and _SYNTHETIC_WORD.search(title):
        return f"its model card says so ({MODEL_CARD}: '{title}')"
    if encoder.lower().startswith(SYNTHETIC_ENCODER_PREFIX):
        return f"it was trained on features of the '{encoder}' encoder"
    return synthetic_cohort_reason(config)


def synthetic_cohort_reason(config: Mapping[str, object] | None) -> str | None:
    """Why a run config's data is a SYNTHETIC cohort, None when nothing says so: the
    ``synthetic`` encoder, or a ``README_SYNTHETIC.txt`` beside the label table or in the
    features folder's parent (the viewer's rule for runs; relative paths are read from the
    current folder, as the run's own commands read them).

    Args:
        config: a run's resolved config as a plain dict (``Config.to_dict()``,
            ``CheckpointInfo.config``); anything else reads as not synthetic.
    """
    data = config.get("data") if isinstance(config, Mapping) else None
    if not isinstance(data, Mapping):
        return None
    encoder = data.get("encoder")
    if isinstance(encoder, str) and encoder.lower().startswith(SYNTHETIC_ENCODER_PREFIX):
        return f"it was trained on features of the '{encoder}' encoder"
    for key in COHORT_KEYS:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            continue
        mark = Path(value).parent / SYNTHETIC_MARK
        if _is_file(mark):
            return f"its cohort is marked SYNTHETIC ({mark})"
    return None


def _is_file(path: Path) -> bool:
    """``path.is_file()`` that answers False for unreadable folders and odd names."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False
