"""What the viewer was started on: run directory, default checkpoint, data roots, upload limit.

``hmil view`` passes these to the Streamlit process through environment variables (Streamlit
scripts cannot take arguments under ``streamlit.testing``, and environment variables work for
``streamlit run`` and tests alike). :func:`settings_from_env` turns them into a frozen
:class:`ViewerSettings`; without them (plain ``streamlit run viewer/app.py``) the defaults are
the demo run ``hmil-demo/run`` when it exists, else the demo checkpoint alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hmil.params import Interval, Options, param, validate
from viewer.access import is_loopback
from viewer.core.paths import resolve

ENV_RUN = "HMIL_VIEW_RUN"
ENV_CHECKPOINT = "HMIL_VIEW_CHECKPOINT"
ENV_DATA_ROOTS = "HMIL_VIEW_DATA_ROOTS"  # os.pathsep-separated
ENV_MAX_UPLOAD_MB = "HMIL_VIEW_MAX_UPLOAD_MB"
#: how the attention layer is drawn: ``canvas`` (in the browser, default) or ``tiles``
#: (server-rendered overlay tiles, kept to measure against; see viewer/tiles/overlay.py)
ENV_OVERLAY = "HMIL_VIEW_OVERLAY"
OVERLAYS = ("canvas", "tiles")
#: who may talk to the server (viewer/access.py): the ``--host`` it binds, the names the
#: operator adds (comma-separated), the access token, and whether a shared bind offers the
#: Training page ("1")
ENV_HOST = "HMIL_VIEW_HOST"
ENV_ALLOW_HOSTS = "HMIL_VIEW_ALLOW_HOSTS"
ENV_TOKEN = "HMIL_VIEW_TOKEN"
ENV_ALLOW_TRAINING = "HMIL_VIEW_ALLOW_TRAINING"
DEFAULT_HOST = "127.0.0.1"

#: the source checkout (parent of ``viewer/``), where ``checkpoints/`` lives
REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR_NAME = "hmil-demo"
DEMO_RUN = Path(DEMO_DIR_NAME) / "run"
DEMO_CHECKPOINT = Path("checkpoints") / "demo" / "checkpoint.pt"
DEFAULT_MAX_UPLOAD_MB = 512


@dataclass(frozen=True)
class ViewerSettings:
    """Operator-chosen configuration of one viewer process; each field's help and accepted
    values are declared with it (:func:`hmil.params.param`), checked on construction
    (:class:`~hmil.errors.ConfigError` naming the field, e.g. ``overlay``)."""

    run: Path | None = param(  # noqa: RUF009  (param returns a dataclasses.field)
        help="the run directory opened at start (None: model only, e.g. the demo checkpoint)"
    )
    checkpoint: Path | None = param(  # noqa: RUF009  (param returns a dataclasses.field)
        help="default checkpoint for uploaded bags (None when none was found)"
    )
    data_roots: tuple[Path, ...] = param(
        help="folders the operator added (also where new runs go by default)"
    )
    roots: tuple[Path, ...] = param(
        help="every folder (or file) the viewer may read: data_roots, the run, the data the "
        "run's config names, the demo folder and checkpoints/"
    )
    max_upload_mb: int = param(
        DEFAULT_MAX_UPLOAD_MB, "largest upload accepted (MB)", Interval(int, 1, None, "left")
    )
    overlay: str = param(
        OVERLAYS[0],
        "how the attention layer is drawn: coloured in the browser from the patch scores "
        "(canvas, faster) or as server-rendered overlay tiles (tiles, kept for comparison)",
        Options(OVERLAYS),
    )
    host: str = param(DEFAULT_HOST, "the address the server binds")
    allow_hosts: tuple[str, ...] = param((), "further host names it answers to")
    token: str = param(
        "", "the access token every request must show ('' = none; kept out of repr)", repr=False
    )
    allow_training: bool = param(False, "offer the Training page on a shared bind")

    def __post_init__(self) -> None:
        validate(self)

    @property
    def training_enabled(self) -> bool:
        """The Training page starts processes on this machine: offered on a loopback bind,
        and on a shared one only when the operator asked for it."""
        return self.allow_training or is_loopback(self.host)


def demo_dirs(cwd: Path) -> list[Path]:
    """Candidate demo folders: ``./hmil-demo`` and ``<checkout>/hmil-demo``."""
    return _unique([cwd / DEMO_DIR_NAME, REPO_ROOT / DEMO_DIR_NAME])


def checkpoint_dirs(cwd: Path) -> list[Path]:
    return _unique([cwd / "checkpoints", REPO_ROOT / "checkpoints"])


def default_run(cwd: Path) -> Path | None:
    """The demo run when it exists (``hmil-demo/run`` here or in the checkout), else None."""
    for demo in demo_dirs(cwd):
        if (demo / "run" / "config.yaml").is_file():
            return resolve(demo / "run")
    return None


def default_checkpoint(cwd: Path) -> Path | None:
    """``checkpoints/demo/checkpoint.pt`` (here or in the checkout) when it exists."""
    for folder in checkpoint_dirs(cwd):
        candidate = folder / "demo" / "checkpoint.pt"
        if candidate.is_file():
            return resolve(candidate)
    return None


def run_data_paths(run: Path) -> list[Path]:
    """Files and folders a run's ``config.yaml`` names: the label table (and ``slides/``,
    ``masks/`` beside it), the features and splits folders, a hierarchy file (anything that
    is not a preset name).

    Unreadable or missing configs give ``[]`` (the pages report the problem themselves).
    """
    from hmil.errors import HMILError
    from hmil.hierarchy import PRESETS
    from viewer.core.runs import read_run_config

    try:
        data = read_run_config(run).data
    except HMILError:
        return []
    out: list[Path] = []
    if data.labels:
        labels = Path(data.labels)
        out += [labels, labels.parent / "slides", labels.parent / "masks"]
        out += [labels.parent / "README_SYNTHETIC.txt", labels.parent / "cohort.json"]
    for folder in (data.features, data.splits):
        if folder:
            out.append(Path(folder))
    if data.hierarchy and data.hierarchy.strip().lower() not in PRESETS:  # a file, any suffix
        out.append(Path(data.hierarchy))
    if data.features:
        out.append(Path(data.features).parent / "slides")
    return out


def build_settings(
    run: str | Path | None,
    data_roots: Sequence[str | Path] = (),
    checkpoint: str | Path | None = None,
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
    cwd: str | Path | None = None,
    overlay: str = OVERLAYS[0],
    host: str = DEFAULT_HOST,
    allow_hosts: Sequence[str] = (),
    token: str = "",
    allow_training: bool = False,
) -> ViewerSettings:
    """Resolve paths and collect the data roots (see :class:`ViewerSettings`)."""
    here = Path(cwd) if cwd is not None else Path.cwd()
    run_path = resolve(run) if run else default_run(here)
    ckpt = resolve(checkpoint) if checkpoint else default_checkpoint(here)
    extra = tuple(resolve(r) for r in data_roots)
    roots: list[Path] = list(extra)
    if run_path is not None:
        roots.append(run_path)
        roots += [resolve(p) for p in run_data_paths(run_path)]
    roots += [resolve(d) for d in demo_dirs(here) + checkpoint_dirs(here)]
    if ckpt is not None:
        roots.append(ckpt)
    return ViewerSettings(
        run=run_path,
        checkpoint=ckpt,
        data_roots=extra,
        roots=tuple(_unique(roots)),
        max_upload_mb=int(max_upload_mb),
        overlay=overlay,
        host=host,
        allow_hosts=tuple(allow_hosts),
        token=token,
        allow_training=allow_training,
    )


def settings_from_env(
    environ: Mapping[str, str] | None = None, cwd: str | Path | None = None
) -> ViewerSettings:
    """Settings from the ``HMIL_VIEW_*`` variables that ``hmil view`` sets."""
    env = os.environ if environ is None else environ
    roots = [r for r in env.get(ENV_DATA_ROOTS, "").split(os.pathsep) if r.strip()]
    try:
        max_mb = int(env.get(ENV_MAX_UPLOAD_MB, "") or DEFAULT_MAX_UPLOAD_MB)
    except ValueError:
        max_mb = DEFAULT_MAX_UPLOAD_MB
    overlay = env.get(ENV_OVERLAY, "") or OVERLAYS[0]
    return build_settings(
        run=env.get(ENV_RUN) or None,
        data_roots=roots,
        checkpoint=env.get(ENV_CHECKPOINT) or None,
        max_upload_mb=max_mb,
        cwd=cwd,
        overlay=overlay if overlay in OVERLAYS else OVERLAYS[0],
        host=env.get(ENV_HOST) or DEFAULT_HOST,
        allow_hosts=[h.strip() for h in env.get(ENV_ALLOW_HOSTS, "").split(",") if h.strip()],
        token=env.get(ENV_TOKEN, ""),
        allow_training=env.get(ENV_ALLOW_TRAINING) == "1",
    )


def settings_env(settings: ViewerSettings) -> dict[str, str]:
    """The environment variables that make :func:`settings_from_env` give ``settings`` back."""
    env = {
        ENV_RUN: str(settings.run or ""),
        ENV_CHECKPOINT: str(settings.checkpoint or ""),
        ENV_DATA_ROOTS: os.pathsep.join(str(r) for r in settings.data_roots),
        ENV_MAX_UPLOAD_MB: str(settings.max_upload_mb),
        ENV_OVERLAY: settings.overlay,
        ENV_HOST: settings.host,
        ENV_ALLOW_HOSTS: ",".join(settings.allow_hosts),
        ENV_TOKEN: settings.token,
        ENV_ALLOW_TRAINING: "1" if settings.allow_training else "",
    }
    return env


def _unique(paths: list[Path]) -> list[Path]:
    seen: dict[Path, None] = {}
    for p in paths:
        seen.setdefault(p, None)
    return list(seen)
