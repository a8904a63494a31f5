"""Run configuration: dataclasses with a documented default for every field, YAML in and out.

``hmil train --config FILE`` reads a YAML file holding any subset of the sections below; CLI
flags override it; the fully resolved config is written to ``RUN/config.yaml`` so that a run can
be reproduced from that file alone. Unknown keys and wrong types are errors naming the key.
Each field's ``metadata["help"]`` is its documentation (``hmil train --print-config`` shows it).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hmil import yamlsafe
from hmil.errors import ConfigError


def _f(default: Any, help: str) -> Any:
    """A dataclass field with an immutable default and its documentation."""
    return field(default=default, metadata={"help": help})


#: bag classifiers of one level (``hmil.model.heads.HEADS`` holds the implementations)
HEADS = ("shared", "per_class")
#: weight initialisations (``hmil.model.init.INITS`` holds the implementations)
INITS = ("pytorch", "xavier", "kaiming")


@dataclass
class ModelConfig:
    """Architecture of HMIL (defaults: the reference model, ~1.3 M parameters at D = 1024)."""

    hidden_dim: int = _f(256, "width of the re-embedding MLP's hidden layer (D→hidden→coarse_dim)")
    coarse_dim: int = _f(1024, "coarse instance feature size h_c")
    fine_dim: int = _f(256, "fine instance feature size h_f = Linear(coarse_dim→fine_dim)(h_c)")
    coarse_attention_dim: int = _f(256, "hidden size of the coarse class-wise gated attention")
    fine_attention_dim: int = _f(64, "hidden size of the fine class-wise gated attention")
    dropout: float = _f(0.0, "dropout after the re-embedding MLP and in the attention (0 = off)")
    head: str = _f(
        "per_class",
        "bag classifier per level: 'shared' = one Linear(F→1) applied to every class row (paper);"
        " 'per_class' = one Linear(F→1) per class (CLAM-MB style; breaks the sign symmetry of the"
        " shared head, see README 'The method')",
    )

    init: str = _f(
        "xavier",
        "weight initialisation: 'pytorch' (nn.Linear's default, as ABMIL/TransMIL), 'xavier' "
        "(CLAM) or 'kaiming' (Kaiming-normal, zero bias: the paper's reference)",
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _require(self.head in HEADS, "model.head", f"must be one of {', '.join(HEADS)}")
        _require(self.init in INITS, "model.init", f"must be one of {', '.join(INITS)}")
        for name in ("hidden_dim", "coarse_dim", "fine_dim"):
            _require(getattr(self, name) >= 1, f"model.{name}", "must be ≥ 1")
        for name in ("coarse_attention_dim", "fine_attention_dim"):
            _require(getattr(self, name) >= 1, f"model.{name}", "must be ≥ 1")
        _require(0.0 <= self.dropout < 1.0, "model.dropout", "must lie in [0, 1)")


CURRICULUM_FACTORS = ("coarse", "contrastive", "none")


@dataclass
class LossTerm:
    """One loss term: on/off, weight, and which curriculum factor multiplies it."""

    enabled: bool = _f(True, "include this term in the loss")
    weight: float = _f(1.0, "constant weight of this term")
    curriculum: str = _f(
        "none", "'coarse' multiplies by β, 'contrastive' by 1 − β, 'none' by 1 (β: schedule)"
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, where: str = "") -> None:
        """Check the values; ``where`` (e.g. ``loss.supcon``) prefixes the key in errors."""
        prefix = f"{where}." if where else ""
        _require(self.weight >= 0, f"{prefix}weight", "must be ≥ 0")
        _require(
            self.curriculum in CURRICULUM_FACTORS,
            f"{prefix}curriculum",
            f"must be one of {', '.join(CURRICULUM_FACTORS)}",
        )


SCHEDULES = ("linear", "quadratic", "constant")
SUPCON_NORMALISATIONS = ("bag", "step")
SUPCON_VIEWS = ("all", "true")


@dataclass
class LossConfig:
    """Loss terms and curriculum weighting.

    Project default (docs/method.md, "Curriculum"):
    L = L_ce^f + β·(L_ce^c + L_ba + L_ia) + (1 − β)·L_con with β = 1 − e/E. The released code's
    variant is ``schedule: quadratic`` with ``bag_align.curriculum: none`` and
    ``inst_align.enabled: false``; the paper figure's is ``bag_align`` and ``inst_align`` off.
    """

    ce_fine: LossTerm = field(
        default_factory=lambda: LossTerm(curriculum="none"),
        metadata={"help": "cross-entropy of the fine head"},
    )
    ce_coarse: LossTerm = field(
        default_factory=lambda: LossTerm(curriculum="coarse"),
        metadata={"help": "cross-entropy of the coarse head"},
    )
    bag_align: LossTerm = field(
        default_factory=lambda: LossTerm(curriculum="coarse"),
        metadata={"help": "bag-level alignment: −log (Mᵀ softmax(fine logits))[y_coarse]"},
    )
    inst_align: LossTerm = field(
        default_factory=lambda: LossTerm(curriculum="coarse"),
        metadata={"help": "instance-level alignment: mean_n 1 − cos(A_c[:, n], (Mᵀ A_f)[:, n])"},
    )
    supcon: LossTerm = field(
        default_factory=lambda: LossTerm(curriculum="contrastive"),
        metadata={"help": "supervised contrastive loss on the class-wise fine bag embeddings"},
    )
    schedule: str = _f(
        "linear", "β over epochs: linear 1 − e/E, quadratic 1 − (e/E)², constant (beta)"
    )
    beta: float = _f(0.5, "β for the constant schedule")
    temperature: float = _f(0.1, "SupCon temperature τ (paper: 0.1)")
    temperature_schedule: str = _f(
        "constant", "constant τ, or 'cosine' τ(e) = 0.1 + 0.9·(1 + cos(2πe/E))/2 (released code)"
    )
    supcon_normalisation: str = _f(
        "bag",
        "scale of the SupCon term: 'bag' adds each bag's SupCon (its Kf anchors against the "
        "memory) to that bag's loss like its cross-entropies; 'step' divides it by "
        "bags_per_step, i.e. one contrastive term per optimiser step beside the bag-averaged "
        "cross-entropies (the released code's scale); equal at bags_per_step 1",
    )
    supcon_views: str = _f(
        "true",
        "SupCon views of a bag: 'all' = its Kf class-wise fine embeddings, each labelled with "
        "the bag's fine class (paper); 'true' = only the embedding of its own class's row",
    )
    supcon_memory: int = _f(
        64,
        "bags whose detached fine embeddings are kept as extra SupCon contrasts (emptied every "
        "epoch). Bags are forwarded one at a time, so this memory replaces the reference's "
        "whole-step graph and keeps RAM bounded",
    )

    def terms(self) -> dict[str, LossTerm]:
        return {
            "ce_fine": self.ce_fine,
            "ce_coarse": self.ce_coarse,
            "bag_align": self.bag_align,
            "inst_align": self.inst_align,
            "supcon": self.supcon,
        }

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name, term in self.terms().items():
            term.validate(f"loss.{name}")
        _require(self.schedule in SCHEDULES, "loss.schedule", f"must be one of {SCHEDULES}")
        _require(0.0 <= self.beta <= 1.0, "loss.beta", "must lie in [0, 1]")
        _require(self.temperature > 0, "loss.temperature", "must be > 0")
        _require(
            self.temperature_schedule in ("constant", "cosine"),
            "loss.temperature_schedule",
            "must be 'constant' or 'cosine'",
        )
        _require(
            self.supcon_normalisation in SUPCON_NORMALISATIONS,
            "loss.supcon_normalisation",
            f"must be one of {', '.join(SUPCON_NORMALISATIONS)}",
        )
        _require(
            self.supcon_views in SUPCON_VIEWS,
            "loss.supcon_views",
            f"must be one of {', '.join(SUPCON_VIEWS)}",
        )
        _require(self.supcon_memory >= 0, "loss.supcon_memory", "must be ≥ 0")


SELECT_METRICS = ("fine_auc", "fine_balanced_accuracy", "fine_macro_f1", "val_loss", "last")
LR_SCHEDULES = ("cosine", "cosine_tail", "plateau", "constant")
CLASS_BALANCE = ("auto", "none", "sampler", "loss")
#: experiment logs written beside ``metrics.jsonl`` (``hmil.train.experiment_log`` writes them)
EXPERIMENT_LOGS = ("tensorboard", "mlflow")


@dataclass
class TrainConfig:
    """Optimisation. Defaults: the project's measured best recipe (README "The method" and
    ``benchmarks/results/accuracy.md``); ``hmil train --preset paper`` gives the published one
    (shared head, 64 bags per step, ReduceLROnPlateau on the validation AUC)."""

    epochs: int = _f(200, "number of epochs E")
    lr: float = _f(1e-4, "Adam learning rate (peak of the schedule)")
    weight_decay: float = _f(0.0, "Adam weight decay")
    bags_per_step: int = _f(
        1, "bags whose losses are averaged into one optimiser step (gradient accumulation)"
    )
    lr_schedule: str = _f(
        "constant",
        "learning rate over epochs: cosine (from lr down to lr·lr_final_fraction at the last "
        "epoch), cosine_tail (lr held, then the same cosine over the last lr_decay_fraction of "
        "the epochs), plateau (ReduceLROnPlateau on the selection metric, the paper's) or constant",
    )
    lr_final_fraction: float = _f(
        0.01, "cosine, cosine_tail: the last epoch's lr as a fraction of lr"
    )
    lr_decay_fraction: float = _f(
        0.25, "cosine_tail: the share of the epochs, at the end, over which the lr decays"
    )
    ema_decay: float = _f(
        0.0,
        "exponential moving average of the weights with this fixed decay per optimiser step; "
        "when > 0 it replaces ema_epochs (0 = the horizon of ema_epochs decides)",
    )
    ema_epochs: float = _f(
        0.5,
        "exponential moving average of the weights over a horizon of this many epochs, updated "
        "after every optimiser step with decay 1 − 1 / (ema_epochs × steps per epoch), so it "
        "covers the same share of an epoch on a small and a large cohort; validation, the "
        "checkpoint and the test use the average (0 = off, the live weights)",
    )
    plateau_factor: float = _f(0.1, "plateau: ReduceLROnPlateau factor")
    plateau_patience: int = _f(5, "plateau: ReduceLROnPlateau patience (epochs)")
    select_metric: str = _f(
        "fine_auc",
        "validation metric that picks the best epoch (ties → lower val loss); 'last' keeps the "
        "last epoch (the only choice when the folds have no validation slides)",
    )
    early_stop_patience: int = _f(0, "stop after this many epochs without improvement (0 = off)")
    class_balance: str = _f(
        "auto",
        "class imbalance: auto (sampler when the training part's largest fine class has ≥ 2× "
        "the bags of its smallest, else none); none; sampler (each epoch draws its bags with "
        "probability ∝ 1 / the count of their fine class, with replacement, as CLAM's weighted "
        "sampler); loss (fine and coarse cross-entropy weighted ∝ 1 / class count)",
    )
    max_instances: int = _f(
        0, "randomly subsample bags larger than this during training (0 = use all instances)"
    )
    seed: int = _f(0, "seed of all randomness (shuffling, init, subsampling)")
    device: str = _f("auto", "auto (CUDA when present), cpu or cuda[:i]")
    amp: bool = _f(
        True, "bf16 autocast for training on CUDA (ignored on CPU; validation and test are fp32)"
    )
    deterministic: bool = _f(
        False,
        "CUDA: deterministic kernels only (torch.use_deterministic_algorithms; a little slower); "
        "CPU training is deterministic anyway",
    )
    cache_bags_gb: float = _f(
        4.0, "keep loaded training bags in RAM up to this many GB (0 = re-read every epoch)"
    )
    experiment_log: str = _f(
        "",
        "also log each fold to these tools, comma-separated: tensorboard (event files in "
        "RUN/fold_K/tensorboard), mlflow (a local file store in RUN/mlruns); '' = metrics.jsonl "
        "only, which the viewer reads either way",
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _require(self.epochs >= 1, "train.epochs", "must be ≥ 1")
        _require(self.lr > 0, "train.lr", "must be > 0")
        _require(self.weight_decay >= 0, "train.weight_decay", "must be ≥ 0")
        _require(self.bags_per_step >= 1, "train.bags_per_step", "must be ≥ 1")
        _require(
            self.lr_schedule in LR_SCHEDULES,
            "train.lr_schedule",
            f"must be one of {', '.join(LR_SCHEDULES)}",
        )
        _require(
            0.0 <= self.lr_final_fraction <= 1.0, "train.lr_final_fraction", "must lie in [0, 1]"
        )
        _require(
            0.0 < self.lr_decay_fraction <= 1.0, "train.lr_decay_fraction", "must lie in (0, 1]"
        )
        _require(0.0 <= self.ema_decay < 1.0, "train.ema_decay", "must lie in [0, 1)")
        _require(self.ema_epochs >= 0.0, "train.ema_epochs", "must be ≥ 0")
        _require(0 < self.plateau_factor < 1, "train.plateau_factor", "must lie in (0, 1)")
        _require(self.plateau_patience >= 0, "train.plateau_patience", "must be ≥ 0")
        _require(
            self.select_metric in SELECT_METRICS,
            "train.select_metric",
            f"must be one of {', '.join(SELECT_METRICS)}",
        )
        _require(self.early_stop_patience >= 0, "train.early_stop_patience", "must be ≥ 0")
        _require(
            self.class_balance in CLASS_BALANCE,
            "train.class_balance",
            f"must be one of {', '.join(CLASS_BALANCE)}",
        )
        _require(self.max_instances >= 0, "train.max_instances", "must be ≥ 0")
        _require(self.cache_bags_gb >= 0, "train.cache_bags_gb", "must be ≥ 0")
        logs = [name for name in self.experiment_log.split(",") if name.strip()]
        _require(
            all(name.strip() in EXPERIMENT_LOGS for name in logs),
            "train.experiment_log",
            f"must be empty or a comma-separated list of {', '.join(EXPERIMENT_LOGS)}",
        )


@dataclass
class DataConfig:
    """Where the cohort lives (paths are stored as given, resolved against the working dir)."""

    labels: str = _f("", "label table CSV (slide_id, label, optional case_id)")
    features: str = _f("", "directory of bags <slide_id>.h5 / .pt")
    splits: str = _f("", "directory of splits_<k>.csv")
    hierarchy: str = _f("", "hierarchy preset name (bracs, panda, ccc) or YAML/JSON file")
    folds: str = _f("all", "folds to train: 'all' or comma-separated indices, e.g. 0,1")
    encoder: str = _f("", "name of the encoder that made the features (recorded in checkpoints)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        return None


@dataclass
class LauncherConfig:
    """How folds are run: in this process, in local worker processes, or as SLURM jobs."""

    kind: str = _f("inline", "inline (this process), local (submitit local processes) or slurm")
    workers: int = _f(1, "folds running at the same time with the local launcher")
    threads: int = _f(
        0,
        "torch intra-op CPU threads per fold job; 0 = automatic (inline: torch's default, local: "
        "CPUs // workers, slurm: cpus_per_job). CPU results are bit-identical across launchers "
        "only with the same thread count, so set it to compare runs",
    )
    partition: str = _f("", "SLURM partition")
    gpus_per_job: int = _f(0, "GPUs per SLURM job")
    cpus_per_job: int = _f(4, "CPUs per job")
    mem_gb: int = _f(32, "memory per SLURM job in GB (0 = the partition default)")
    time_min: int = _f(
        720, "time limit per job in minutes (SLURM --time; local jobs too, then resumed)"
    )
    account: str = _f("", "SLURM account (optional)")
    qos: str = _f("", "SLURM QOS (optional)")
    extra: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "extra submitit/SLURM parameters, e.g. {constraint: a100}"},
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _require(
            self.kind in ("inline", "local", "slurm"),
            "launcher.kind",
            "must be inline, local or slurm",
        )
        _require(self.workers >= 1, "launcher.workers", "must be ≥ 1")
        _require(self.threads >= 0, "launcher.threads", "must be ≥ 0 (0 = automatic)")
        for name in ("cpus_per_job", "time_min"):
            _require(getattr(self, name) >= 1, f"launcher.{name}", "must be ≥ 1")
        for name in ("gpus_per_job", "mem_gb"):
            _require(getattr(self, name) >= 0, f"launcher.{name}", "must be ≥ 0 (0: not requested)")


@dataclass
class Config:
    """Everything a training run needs; ``RUN/config.yaml`` is this object written out."""

    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "cohort paths"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "architecture"})
    loss: LossConfig = field(default_factory=LossConfig, metadata={"help": "loss terms"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "optimisation"})
    launcher: LauncherConfig = field(
        default_factory=LauncherConfig, metadata={"help": "where folds run"}
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> Config:
        for section in (self.data, self.model, self.loss, self.train, self.launcher):
            section.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, source: str = "config") -> Config:
        config: Config = _build(cls(), data or {}, source, prefix="")
        return config.validate()

    @classmethod
    def from_file(cls, path: str | Path, preset: str = "") -> Config:
        """A config file's values over the defaults (or over preset ``preset`` when given)."""
        base = load_preset(preset) if preset else {}
        return cls.from_dict(merge_dicts(base, read_config_dict(path)), source=str(path))

    @classmethod
    def from_preset(cls, name: str) -> Config:
        """The named recipe (``hmil/presets/<name>.yaml``) over the defaults."""
        return cls.from_dict(load_preset(name), source=f"preset {name}")

    @classmethod
    def from_run_file(cls, path: str | Path) -> Config:
        """A run's stored ``config.yaml``. Keys it lacks take the value they had before they
        existed (:data:`LEGACY_VALUES`), not today's default, so resuming or evaluating a run
        made by an older hmil trains and rebuilds exactly what it did."""
        return cls.from_dict(merge_dicts(legacy_values(), read_config_dict(path)), str(path))

    def override(self, dotted: dict[str, Any]) -> Config:
        """A copy with ``{"train.epochs": 5, ...}`` applied (None values are skipped)."""
        data = self.to_dict()
        for key, value in dotted.items():
            if value is None:
                continue
            node = data
            *parents, leaf = key.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value
        return Config.from_dict(data, source="command line")


#: where the named recipes live (``hmil train --preset NAME``)
PRESET_DIR = Path(__file__).with_name("presets")

#: fields added after the first run-config layout, with the value that reproduces what runs
#: made before them did (the defaults were the paper's recipe then)
LEGACY_VALUES: dict[str, Any] = {
    "model.head": "shared",
    "model.init": "kaiming",
    "train.lr_schedule": "plateau",
    "train.lr_final_fraction": 0.01,
    "train.lr_decay_fraction": 0.25,
    "train.ema_decay": 0.0,
    "train.ema_epochs": 0.0,
    "train.class_balance": "none",
    "train.deterministic": False,
    "loss.supcon_normalisation": "bag",
    "loss.supcon_views": "all",
}


def legacy_values() -> dict[str, Any]:
    """:data:`LEGACY_VALUES` as a nested mapping."""
    nested: dict[str, Any] = {}
    for dotted, value in LEGACY_VALUES.items():
        section, key = dotted.split(".")
        nested.setdefault(section, {})[key] = value
    return nested


def preset_names() -> list[str]:
    """Names of the shipped presets (``paper``, ``released``, …)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The mapping stored in preset ``name``; an unknown name is a :class:`ConfigError`."""
    if name not in preset_names():
        known = ", ".join(preset_names())
        raise ConfigError("--preset", f"unknown preset '{name}' (known: {known})")
    return read_config_dict(PRESET_DIR / f"{name}.yaml")


def read_config_dict(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file (empty file → ``{}``)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(p, "config file not found")
    try:
        data = yamlsafe.load_file(p)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(p, f"cannot parse YAML ({str(exc).splitlines()[0]})") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(p, "a config file must be a mapping of sections")
    return data or {}


def merge_dicts(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` applied recursively (mappings merge, other values replace)."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_dicts(merged[key], value)
        else:
            merged[key] = value
    return merged


def _require(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(key, problem)


def _build(base: Any, data: Any, source: str, prefix: str) -> Any:
    """A copy of dataclass instance ``base`` with the values in ``data`` applied recursively.

    Starting from the default instance (not the class) keeps per-field defaults of nested
    sections, e.g. ``loss.ce_coarse`` keeps ``curriculum: coarse`` when only its weight is set.
    Unknown keys and wrong types are errors naming the dotted key.
    """
    cls = type(base)
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(source, f"'{where}' must be a mapping, found {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            source,
            f"unknown config key '{prefix}{unknown[0]}' (known in '{where}': {', '.join(fields)})",
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(getattr(base, name), value, source, prefix=f"{key}.")
        else:
            kwargs[name] = _coerce(value, hint, key, source)
    try:
        return dataclasses.replace(base, **kwargs)  # runs the section's __post_init__ checks
    except ConfigError as exc:
        section = prefix.split(".", 1)[0]
        if section and not exc.where.startswith(section):  # a nested term names its field only
            raise ConfigError(f"{prefix}{exc.where}", exc.problem) from None
        raise


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, f"'{key}' must be a mapping")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(source, f"'{key}' must be true or false, found {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(source, f"'{key}' must be an integer, found {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(source, f"'{key}' must be a number, found {value!r}")
    if hint is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(source, f"'{key}' must be a string, found {value!r}")
    return value


def describe(cls: type = Config, prefix: str = "") -> list[str]:
    """One ``key: default  # help`` line per field (for ``--print-config`` and the docs)."""
    lines: list[str] = []
    hints = typing.get_type_hints(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        help_text = f.metadata.get("help", "")
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            lines.append(f"{prefix}{f.name}:  # {help_text}")
            lines.extend(describe(hint, prefix + "  "))
        else:
            lines.append(f"{prefix}{f.name}: {getattr(instance, f.name)!r}  # {help_text}")
    return lines
