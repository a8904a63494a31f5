"""The Training page's form: typed values → checked paths → a run config, and split files.

Whoever reaches the page may start training, so the form runs nobody's code: the "More config"
text may set only the model, loss and train sections and the launcher's resource fields
(:data:`FORM_KEYS`) — never ``launcher.extra``, whose values go into the SLURM job script as
they are (``setup`` entries are shell lines). Every path goes through :mod:`viewer.core.paths`
(under the data roots); the process itself is started by :mod:`viewer.core.launches`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hmil import yamlsafe
from hmil.config import Config
from hmil.errors import ConfigError, RunError
from hmil.hierarchy import PRESETS
from hmil.train.runs import CONFIG_NAME, load_run_config
from viewer.core.paths import check_hierarchy, check_under_roots

#: largest "More config" text accepted
MAX_EXTRA_BYTES = 16 * 1024
#: what "More config" may set: section → allowed keys (None: every key of the section, which
#: :class:`hmil.config.Config` validates). The form's own fields set ``data``.
FORM_LAUNCHER_KEYS = frozenset(
    {"kind", "workers", "threads", "partition", "gpus_per_job", "cpus_per_job", "mem_gb",
     "time_min", "account", "qos"}
)  # fmt: skip
FORM_KEYS: dict[str, frozenset[str] | None] = {
    "model": None,
    "loss": None,
    "train": None,
    "launcher": FORM_LAUNCHER_KEYS,
}


@dataclass
class TrainForm:
    """The training form's values (paths as typed; checked by :func:`checked_paths`).

    Attributes:
        out: run directory to create or continue.
        labels, features, splits: cohort paths.
        hierarchy: preset name or YAML/JSON file.
        folds: fold indices to train (empty = all split files).
        overrides: dotted config keys → values (``train.epochs``, ``train.lr``, ...).
        extra_yaml: further config as YAML text (the keys of :data:`FORM_KEYS`), applied
            before ``overrides``.
    """

    out: str
    labels: str
    features: str
    splits: str
    hierarchy: str
    folds: list[int] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    extra_yaml: str = ""


def checked_paths(form: TrainForm, roots: tuple[Path, ...]) -> dict[str, Path]:
    """Resolve the form's paths, refusing any outside the data roots (PathRefused).

    ``hierarchy`` is in the result when it names a file: anything but a preset name is a file,
    whatever its suffix, and is checked like the other paths.
    """
    out = {
        "out": check_under_roots(form.out, roots),
        "labels": check_under_roots(form.labels, roots),
        "features": check_under_roots(form.features, roots),
        "splits": check_under_roots(form.splits, roots),
    }
    hierarchy = check_hierarchy(form.hierarchy, roots)
    if hierarchy.lower() not in PRESETS:
        out["hierarchy"] = Path(hierarchy)
    return out


def parse_folds(text: str) -> list[int]:
    """``"all"``/empty → ``[]`` (all folds); ``"0, 2"`` → ``[0, 2]`` (ConfigError otherwise)."""
    text = text.strip().lower()
    if text in ("", "all"):
        return []
    try:
        folds = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ConfigError(
            "folds", f"expected 'all' or comma-separated integers, got '{text}'"
        ) from None
    if any(f < 0 for f in folds):
        raise ConfigError("folds", "fold indices are ≥ 0")
    return folds


def hierarchy_spec(form: TrainForm, paths: dict[str, Path]) -> str:
    """The hierarchy to use: the checked file of :func:`checked_paths`, else the preset name."""
    return str(paths["hierarchy"]) if "hierarchy" in paths else form.hierarchy.strip()


def parse_extra(text: str) -> dict[str, Any]:
    """The "More config" text as a mapping, limited to :data:`FORM_KEYS` (ConfigError)."""
    if not text.strip():
        return {}
    try:
        data = yamlsafe.load(text, max_bytes=MAX_EXTRA_BYTES)
    except yamlsafe.YAMLRefused as exc:
        raise ConfigError("extra config", f"cannot parse YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("extra config", "must be a mapping of sections")
    for section, value in data.items():
        if section not in FORM_KEYS:
            allowed = ", ".join(FORM_KEYS)
            raise ConfigError(
                "extra config",
                f"section '{section}' cannot be set here (allowed: {allowed}; the form's fields "
                "set the data paths)",
            )
        keys = FORM_KEYS[section]
        if keys is not None and isinstance(value, dict):
            refused = sorted(str(k) for k in value if k not in keys)
            if refused:
                raise ConfigError(
                    "extra config",
                    f"'{section}.{refused[0]}' cannot be set from the viewer (allowed in "
                    f"'{section}': {', '.join(sorted(keys))})",
                )
    return data


def build_config(form: TrainForm, paths: dict[str, Path]) -> Config:
    """The run config: defaults ← ``extra_yaml`` ← form fields (raises ConfigError)."""
    base = Config.from_dict(parse_extra(form.extra_yaml), source="extra config")
    hierarchy = hierarchy_spec(form, paths)
    dotted: dict[str, Any] = {
        "data.labels": str(paths["labels"]),
        "data.features": str(paths["features"]),
        "data.splits": str(paths["splits"]),
        "data.hierarchy": hierarchy,
        "data.folds": ",".join(str(f) for f in sorted(form.folds)) if form.folds else "all",
    }
    dotted.update(form.overrides)
    config = base.override(dotted)
    if config.launcher.kind == "slurm":  # partition, account, QOS become #SBATCH lines
        from hmil.launch.executors import slurm_parameters

        slurm_parameters(config.launcher, "hmil-check")
    return config


def create_splits(
    labels: Path,
    hierarchy: str,
    out: Path,
    k: int,
    seed: int,
    val_frac: float,
    test_frac: float | None,
) -> list[Path]:
    """Write ``splits_<i>.csv`` for ``k`` folds into ``out`` (same as ``hmil split``)."""
    from hmil.data.labels import read_labels
    from hmil.data.splits import make_splits, write_splits
    from hmil.hierarchy import Hierarchy

    table = read_labels(labels, Hierarchy.resolve(hierarchy))
    return write_splits(make_splits(table, k, seed, val_frac, test_frac), out)


def available_folds(splits_dir: str | Path) -> list[int]:
    """Fold indices that have a ``splits_<k>.csv``."""
    from hmil.data.splits import list_split_files

    try:
        return sorted(list_split_files(splits_dir))
    except Exception:  # a missing or unreadable folder simply has no folds
        return []


def check_split_files(splits_dir: Path, folds: list[int], roots: tuple[Path, ...]) -> None:
    """Refuse (PathRefused) a ``splits_<k>.csv`` of ``folds`` that resolves outside the roots
    (a symlink in the splits folder): the training would read it."""
    from hmil.data.splits import list_split_files

    files = list_split_files(splits_dir)
    for fold in folds:
        if fold in files:
            check_under_roots(files[fold], roots)


def resume_config(run: Path, roots: tuple[Path, ...]) -> Config:
    """The run's own config (``RUN/config.yaml``), to continue its interrupted folds from the
    page: its data paths are checked like the form's (absolute, under the data roots, split
    files included), and a config with ``launcher.extra`` is refused (raw SLURM parameters and
    ``setup`` shell lines: the page runs nobody's code, see the module docstring).

    Raises:
        HMILError: not a run, a path refused, or ``launcher.extra`` set.
    """
    config = load_run_config(run)
    data = config.data
    for key in ("labels", "features", "splits"):
        value = str(getattr(data, key))
        if not Path(value).is_absolute():
            raise RunError(
                run / CONFIG_NAME, f"data.{key} is a relative path; continue it with hmil train"
            )
        check_under_roots(value, roots)
    check_hierarchy(data.hierarchy, roots)
    check_split_files(Path(data.splits), available_folds(data.splits), roots)
    if config.launcher.extra:
        raise RunError(
            run / CONFIG_NAME,
            "sets launcher.extra (SLURM parameters or setup lines), which the viewer never "
            f"runs; continue it with: hmil train --resume --out {run}",
        )
    return config
