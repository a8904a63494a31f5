"""Run configuration: dataclasses with a documented default for every field, YAML in and out.

``hmil train --config FILE`` reads a YAML file holding any subset of the sections below; CLI
flags override it; the fully resolved config is written to ``RUN/config.yaml`` so that a run can
be reproduced from that file alone. Unknown keys and wrong types are errors naming the key.
Each field declares its documentation and what it accepts once, with :func:`hmil.params.param`
(``Interval``, ``Options``, ``Subset``); :func:`hmil.params.validate` checks them all and names the
field's dotted key (``train.epochs``), ``hmil train`` builds its flags from them and
``hmil train --print-config`` shows them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from hmil import yamlsafe
from hmil.errors import ConfigError
from hmil.params import (
    Interval,
    Options,
    Subset,
    constraint,
    nested,
    param,
    registry_keys,
    validate,
)

#: ≥ 1, ≥ 0, > 0 and [0, 1]: the most common rules
AT_LEAST_1 = Interval(int, 1, None, closed="left")
AT_LEAST_0 = Interval(int, 0, None, closed="left")
NON_NEGATIVE = Interval(float, 0, None, closed="left")
POSITIVE = Interval(float, 0, None, closed="neither")
FRACTION = Interval(float, 0, 1, closed="both")
#: bag classifiers of one level: the keys of ``hmil.model.heads.HEADS`` (the implementations)
HEAD_CHOICES = Options(registry_keys("hmil.model.heads", "HEADS"))
#: weight initialisations: the keys of ``hmil.model.init.INITS`` (the implementations)
INIT_CHOICES = Options(registry_keys("hmil.model.init", "INITS"))


@dataclass
class ModelConfig:
    """Architecture of HMIL (defaults: the reference model, ~1.3 M parameters at D = 1024)."""

    SECTION: ClassVar[str] = "model"

    hidden_dim: int = param(
        256, "width of the re-embedding MLP's hidden layer (D→hidden→coarse_dim)", AT_LEAST_1
    )
    coarse_dim: int = param(1024, "coarse instance feature size h_c", AT_LEAST_1)
    fine_dim: int = param(
        256, "fine instance feature size h_f = Linear(coarse_dim→fine_dim)(h_c)", AT_LEAST_1
    )
    coarse_attention_dim: int = param(
        256, "hidden size of the coarse class-wise gated attention", AT_LEAST_1
    )
    fine_attention_dim: int = param(
        64, "hidden size of the fine class-wise gated attention", AT_LEAST_1
    )
    dropout: float = param(
        0.0,
        "dropout after the re-embedding MLP and in the attention (0 = off)",
        Interval(float, 0, 1, closed="left"),
    )
    head: str = param(
        "per_class",
        "bag classifier per level: 'shared' = one Linear(F→1) applied to every class row (paper);"
        " 'per_class' = one Linear(F→1) per class (CLAM-MB style; breaks the sign symmetry of the"
        " shared head, see README 'The method')",
        HEAD_CHOICES,
    )

    init: str = param(
        "xavier",
        "weight initialisation: 'pytorch' (nn.Linear's default, as ABMIL/TransMIL), 'xavier' "
        "(CLAM) or 'kaiming' (Kaiming-normal, zero bias: the paper's reference)",
        INIT_CHOICES,
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        validate(self)


CURRICULUM_FACTORS = ("coarse", "contrastive", "none")


@dataclass
class LossTerm:
    """One loss term: on/off, weight, and which curriculum factor multiplies it."""

    enabled: bool = param(True, "include this term in the loss")
    weight: float = param(1.0, "constant weight of this term", NON_NEGATIVE)
    curriculum: str = param(
        "none",
        "'coarse' multiplies by β, 'contrastive' by 1 − β, 'none' by 1 (β: schedule)",
        Options(CURRICULUM_FACTORS),
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, where: str = "") -> None:
        """Check the values; ``where`` (e.g. ``loss.supcon``) prefixes the key in errors."""
        validate(self, where)


SCHEDULES = ("linear", "quadratic", "constant")
SUPCON_NORMALISATIONS = ("bag", "step")
SUPCON_VIEWS = ("all", "true")
TEMPERATURE_SCHEDULES = ("constant", "cosine")


@dataclass
class LossConfig:
    """Loss terms and curriculum weighting.

    Project default (docs/method.md, "Curriculum"):
    L = L_ce^f + β·(L_ce^c + L_ba + L_ia) + (1 − β)·L_con with β = 1 − e/E. The released code's
    variant is ``schedule: quadratic`` with ``bag_align.curriculum: none`` and
    ``inst_align.enabled: false``; the paper figure's is ``bag_align`` and ``inst_align`` off.
    """

    SECTION: ClassVar[str] = "loss"

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
    schedule: str = param(
        "linear",
        "β over epochs: linear 1 − e/E, quadratic 1 − (e/E)², constant (beta)",
        Options(SCHEDULES),
    )
    beta: float = param(0.5, "β for the constant schedule", FRACTION)
    temperature: float = param(0.1, "SupCon temperature τ (paper: 0.1)", POSITIVE)
    temperature_schedule: str = param(
        "constant",
        "constant τ, or 'cosine' τ(e) = 0.1 + 0.9·(1 + cos(2πe/E))/2 (released code)",
        Options(TEMPERATURE_SCHEDULES),
    )
    supcon_normalisation: str = param(
        "bag",
        "scale of the SupCon term: 'bag' adds each bag's SupCon (its Kf anchors against the "
        "memory) to that bag's loss like its cross-entropies; 'step' divides it by "
        "bags_per_step, i.e. one contrastive term per optimiser step beside the bag-averaged "
        "cross-entropies (the released code's scale); equal at bags_per_step 1",
        Options(SUPCON_NORMALISATIONS),
    )
    supcon_views: str = param(
        "true",
        "SupCon views of a bag: 'all' = its Kf class-wise fine embeddings, each labelled with "
        "the bag's fine class (paper); 'true' = only the embedding of its own class's row",
        Options(SUPCON_VIEWS),
    )
    supcon_memory: int = param(
        64,
        "bags whose detached fine embeddings are kept as extra SupCon contrasts (emptied every "
        "epoch). Bags are forwarded one at a time, so this memory replaces the reference's "
        "whole-step graph and keeps RAM bounded",
        AT_LEAST_0,
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
        validate(self)


SELECT_METRICS = ("fine_auc", "fine_balanced_accuracy", "fine_macro_f1", "val_loss", "last")
LR_SCHEDULES = ("cosine", "cosine_tail", "plateau", "constant")
CLASS_BALANCE = ("auto", "none", "sampler", "loss")
#: experiment logs written beside ``metrics.jsonl``: the writers ``hmil.train.experiment_log`` has
EXPERIMENT_LOGS = Subset(registry_keys("hmil.train.experiment_log", "WRITERS"))


@dataclass
class TrainConfig:
    """Optimisation. Defaults: the project's measured best recipe (README "The method" and
    ``benchmarks/results/accuracy.md``); ``hmil train --preset paper`` gives the published one
    (shared head, 64 bags per step, ReduceLROnPlateau on the validation AUC)."""

    SECTION: ClassVar[str] = "train"

    epochs: int = param(200, "number of epochs E", AT_LEAST_1)
    lr: float = param(1e-4, "Adam learning rate (peak of the schedule)", POSITIVE)
    weight_decay: float = param(0.0, "Adam weight decay", NON_NEGATIVE)
    bags_per_step: int = param(
        1,
        "bags whose losses are averaged into one optimiser step (gradient accumulation)",
        AT_LEAST_1,
    )
    lr_schedule: str = param(
        "constant",
        "learning rate over epochs: cosine (from lr down to lr·lr_final_fraction at the last "
        "epoch), cosine_tail (lr held, then the same cosine over the last lr_decay_fraction of "
        "the epochs), plateau (ReduceLROnPlateau on the selection metric, the paper's) or constant",
        Options(LR_SCHEDULES),
    )
    lr_final_fraction: float = param(
        0.01, "cosine, cosine_tail: the last epoch's lr as a fraction of lr", FRACTION
    )
    lr_decay_fraction: float = param(
        0.25,
        "cosine_tail: the share of the epochs, at the end, over which the lr decays",
        Interval(float, 0, 1, closed="right"),
    )
    ema_decay: float = param(
        0.0,
        "exponential moving average of the weights with this fixed decay per optimiser step; "
        "when > 0 it replaces ema_epochs (0 = the horizon of ema_epochs decides)",
        Interval(float, 0, 1, closed="left"),
    )
    ema_epochs: float = param(
        0.5,
        "exponential moving average of the weights over a horizon of this many epochs, updated "
        "after every optimiser step with decay 1 − 1 / (ema_epochs × steps per epoch), so it "
        "covers the same share of an epoch on a small and a large cohort; validation, the "
        "checkpoint and the test use the average (0 = off, the live weights)",
        NON_NEGATIVE,
    )
    plateau_factor: float = param(
        0.1, "plateau: ReduceLROnPlateau factor", Interval(float, 0, 1, closed="neither")
    )
    plateau_patience: int = param(5, "plateau: ReduceLROnPlateau patience (epochs)", AT_LEAST_0)
    select_metric: str = param(
        "fine_auc",
        "validation metric that picks the best epoch (ties → lower val loss); 'last' keeps the "
        "last epoch (the only choice when the folds have no validation slides)",
        Options(SELECT_METRICS),
    )
    early_stop_patience: int = param(
        0, "stop after this many epochs without improvement (0 = off)", AT_LEAST_0
    )
    class_balance: str = param(
        "auto",
        "class imbalance: auto (sampler when the training part's largest fine class has ≥ 2× "
        "the bags of its smallest, else none); none; sampler (each epoch draws its bags with "
        "probability ∝ 1 / the count of their fine class, with replacement, as CLAM's weighted "
        "sampler); loss (fine and coarse cross-entropy weighted ∝ 1 / class count)",
        Options(CLASS_BALANCE),
    )
    max_instances: int = param(
        0,
        "randomly subsample bags larger than this during training (0 = use all instances)",
        AT_LEAST_0,
    )
    seed: int = param(0, "seed of all randomness (shuffling, init, subsampling)")
    device: str = param("auto", "auto (CUDA when present), cpu or cuda[:i]")
    amp: bool = param(
        True, "bf16 autocast for training on CUDA (ignored on CPU; validation and test are fp32)"
    )
    deterministic: bool = param(
        False,
        "CUDA: deterministic kernels only (torch.use_deterministic_algorithms; a little slower); "
        "CPU training is deterministic anyway",
    )
    cache_bags_gb: float = param(
        4.0,
        "keep loaded training bags in RAM up to this many GB (0 = re-read every epoch)",
        NON_NEGATIVE,
    )
    experiment_log: str = param(
        "",
        "also log each fold to these tools, comma-separated: tensorboard (event files in "
        "RUN/fold_K/tensorboard), mlflow (a local file store in RUN/mlruns); '' = metrics.jsonl "
        "only, which the viewer reads either way",
        EXPERIMENT_LOGS,
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        validate(self)


@dataclass
class DataConfig:
    """Where the cohort lives (paths are stored as given, resolved against the working dir)."""

    SECTION: ClassVar[str] = "data"

    labels: str = param("", "label table CSV (slide_id, label, optional case_id)")
    features: str = param("", "directory of bags <slide_id>.h5 / .pt")
    splits: str = param("", "directory of splits_<k>.csv")
    hierarchy: str = param("", "hierarchy preset name (bracs, panda, ccc) or YAML/JSON file")
    folds: str = param("all", "folds to train: 'all' or comma-separated indices, e.g. 0,1")
    encoder: str = param("", "name of the encoder that made the features (recorded in checkpoints)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        validate(self)


#: where fold (and extraction shard) jobs run
LAUNCHERS = ("inline", "local", "slurm")


@dataclass
class LauncherConfig:
    """How folds are run: in this process, in local worker processes, or as SLURM jobs."""

    SECTION: ClassVar[str] = "launcher"

    kind: str = param(
        "inline",
        "inline (this process), local (submitit local processes) or slurm",
        Options(LAUNCHERS),
    )
    workers: int = param(1, "folds running at the same time with the local launcher", AT_LEAST_1)
    threads: int = param(
        0,
        "torch intra-op CPU threads per fold job; 0 = automatic (inline: torch's default, local: "
        "CPUs // workers, slurm: cpus_per_job). CPU results are bit-identical across launchers "
        "only with the same thread count, so set it to compare runs",
        AT_LEAST_0,
    )
    partition: str = param("", "SLURM partition")
    gpus_per_job: int = param(0, "GPUs per SLURM job (0: not requested)", AT_LEAST_0)
    cpus_per_job: int = param(4, "CPUs per job", AT_LEAST_1)
    mem_gb: int = param(32, "memory per SLURM job in GB (0 = the partition default)", AT_LEAST_0)
    time_min: int = param(
        720,
        "time limit per job in minutes (SLURM's time limit; local jobs too, then resumed)",
        AT_LEAST_1,
    )
    account: str = param("", "SLURM account (optional)")
    qos: str = param("", "SLURM QOS (optional)")
    extra: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "extra submitit/SLURM parameters, e.g. {constraint: a100}"},
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        validate(self)


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
        validate(self)
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
        raise ConfigError("preset", f"unknown preset '{name}' (known: {known})")
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


def describe(cls: type = Config, prefix: str = "", instance: Any = None) -> list[str]:
    """One ``key: default  # help [rule]`` line per field (``--print-config`` and the docs)."""
    lines: list[str] = []
    instance = cls() if instance is None else instance
    for f in dataclasses.fields(cls):
        help_text = f.metadata.get("help", "")
        inner = nested(cls, f.name)
        if inner is not None:
            lines.append(f"{prefix}{f.name}:  # {help_text}")
            lines.extend(describe(inner, prefix + "  ", getattr(instance, f.name)))
        else:
            rule = constraint(f)
            shown = f"{help_text} [{rule}]" if rule else help_text
            lines.append(f"{prefix}{f.name}: {getattr(instance, f.name)!r}  # {shown}")
    return lines
