"""``hmil extract --launcher local|slurm --shards K``: feature extraction split into K shards.

The slides still lacking bags are dealt round-robin into K shards (so slow and fast slides
spread evenly); the shards are one submitit job array (``map_array``: one ``sbatch --array``
on SLURM, K processes locally). Each shard runs :func:`hmil.slides.extract.extract_slides`,
which skips slides whose bags exist and writes each bag atomically, so a preempted shard simply
reruns: submitit requeues it on SLURM (:class:`ExtractShardJob` is checkpointable), and running
the same command again shards only the slides still missing.
"""

from __future__ import annotations

import datetime as _dt
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from submitit.helpers import Checkpointable

from hmil.config import LauncherConfig
from hmil.errors import ConfigError
from hmil.io import write_json_atomic
from hmil.launch.executors import (
    CONTROLLER_LOG,
    JOBS_DIR,
    backend,
    children_stderr_to,
    make_executor,
    usable_cpus,
)

if TYPE_CHECKING:
    import submitit

    from hmil.slides.extract import ExtractConfig

EXTRACT_RECORD = "extract.json"


@dataclass(frozen=True)
class ShardSpec:
    """One shard: its slides and how to extract them (paths absolute)."""

    index: int
    slides: tuple[str, ...]
    patches_dir: str
    out_dir: str
    encoder: str
    weights: str | None
    device: str
    config: ExtractConfig
    strict: bool = False


@dataclass
class ShardResult:
    """Slide ids a shard extracted, found already there, or skipped with an error."""

    index: int
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


class ExtractShardJob(Checkpointable):
    """Callable submitted per shard; requeued as is after preemption or time-out (finished
    slides are skipped on the rerun)."""

    def __call__(self, spec: ShardSpec) -> ShardResult:
        from hmil.slides.extract import extract_slides

        report = extract_slides(
            list(spec.slides), spec.patches_dir, spec.out_dir, spec.encoder, spec.config,
            weights=spec.weights, device=spec.device, strict=spec.strict, on_error=_log_error,
            log=lambda line: print(line, file=sys.stderr, flush=True), progress=True,
        )  # fmt: skip
        return ShardResult(
            index=spec.index,
            done=[o.slide_id for o in report.done],
            skipped=[o.slide_id for o in report.skipped],
            failed=[(o.slide_id, o.error or "failed") for o in report.failed],
        )


@dataclass
class ShardSubmission:
    """One shard's job."""

    index: int
    job_id: str
    n_slides: int
    stdout: Path
    stderr: Path


@dataclass
class ExtractLaunch:
    """What :func:`launch_extraction` did.

    Attributes:
        already: slide ids whose bags existed before the launch (not submitted).
        submitted: one entry per shard job.
        results: each shard's result once all have ended (None: left running).
        failed_shards: ``(shard, problem)`` of shards whose job itself failed.
    """

    out_dir: Path
    launcher: str
    already: list[str] = field(default_factory=list)
    submitted: list[ShardSubmission] = field(default_factory=list)
    results: list[ShardResult] | None = None
    failed_shards: list[tuple[int, str]] = field(default_factory=list)


def shard_slides(slides: Sequence[Path], n_shards: int) -> list[list[Path]]:
    """Deal ``slides`` round-robin into at most ``n_shards`` non-empty shards."""
    if n_shards < 1:
        raise ConfigError("shards", f"must be ≥ 1, got {n_shards}")
    return [list(slides[i::n_shards]) for i in range(min(n_shards, len(slides)))]


def launch_extraction(
    slides: Sequence[str | Path],
    patches_dir: str | Path,
    out_dir: str | Path,
    *,
    launcher: LauncherConfig,
    shards: int,
    encoder: str = "hed-texture",
    weights: str | Path | None = None,
    device: str = "auto",
    config: ExtractConfig | None = None,
    strict: bool = False,
    detach: bool = False,
    on_line: Callable[[str], None] | None = None,
    poll_s: float = 1.0,
) -> ExtractLaunch:
    """Extract bags for ``slides`` as ``shards`` jobs of ``launcher.kind`` (local or slurm).

    Problems every shard would hit (unknown encoder, missing weights, missing patches folder)
    are raised here, before anything is submitted. Local shards run at the same time, each
    with ``CPUs // shards`` torch threads (minus its patch readers) and, with several GPUs,
    GPU ``shard mod n_gpus``; SLURM shards get ``cpus_per_job`` minus the readers.
    The CLI waits for local shards unless ``detach``; SLURM shards are left running. With
    ``strict`` a shard stops (fails) at its first bad slide instead of skipping it.

    Raises:
        ConfigError: bad encoder, weights or shard count; HMILError: no patches folder.
    """
    from hmil.slides.encoders import ENCODERS
    from hmil.slides.extract import ExtractConfig, bag_paths, resolve_patches_dir
    from hmil.slides.reader import slide_id_from_path

    config = config or ExtractConfig()
    chosen = backend(launcher.kind)
    if encoder not in ENCODERS:
        known = ", ".join(sorted(ENCODERS))
        raise ConfigError("encoder", f"unknown encoder '{encoder}' (available: {known})")
    if weights is not None and not Path(weights).is_file():
        raise ConfigError("weights", f"{weights}: file not found")
    patches = resolve_patches_dir(patches_dir).resolve()
    out = Path(out_dir).resolve()
    paths = [Path(s).resolve() for s in slides]
    pending = [
        p for p in paths
        if config.overwrite
        or not all(t.is_file() for t in bag_paths(out, slide_id_from_path(p), config.formats))
    ]  # fmt: skip
    launch = ExtractLaunch(out_dir=out, launcher=launcher.kind)
    launch.already = [slide_id_from_path(p) for p in paths if p not in pending]
    groups = shard_slides(pending, shards)
    if not groups:
        launch.results = []
        return launch
    shard_config = _shard_config(config, launcher, len(groups))
    specs = [
        ShardSpec(
            index=i,
            slides=tuple(str(p) for p in group),
            patches_dir=str(patches),
            out_dir=str(out),
            encoder=encoder,
            weights=str(weights) if weights else None,
            device=_shard_device(device, i, chosen.slots),
            config=shard_config,
            strict=strict,
        )
        for i, group in enumerate(groups)
    ]
    executor = make_executor(launcher.kind, out / JOBS_DIR, launcher, job_name="hmil-extract")
    with children_stderr_to(out / JOBS_DIR / CONTROLLER_LOG):
        jobs = executor.map_array(ExtractShardJob(), specs)
    launch.submitted = [
        ShardSubmission(s.index, str(j.job_id), len(s.slides), j.paths.stdout, j.paths.stderr)
        for s, j in zip(specs, jobs, strict=True)
    ]
    _record(out, launcher.kind, specs, launch.submitted)
    if detach or not chosen.waits:
        return launch
    launch.results = _wait(jobs, launch, on_line, poll_s)
    return launch


def _shard_config(config: ExtractConfig, launcher: LauncherConfig, n_shards: int) -> ExtractConfig:
    """Pin the encoder's CPU threads to this shard's share, unless the caller chose them."""
    if config.torch_threads is not None:
        return config
    if launcher.threads:
        threads = launcher.threads
    elif launcher.kind == "local":
        threads = usable_cpus() // n_shards - config.num_readers
    else:
        threads = launcher.cpus_per_job - config.num_readers
    return replace(config, torch_threads=max(1, threads))


def _shard_device(device: str, index: int, local: bool) -> str:
    """Local shards spread over the visible GPUs (``cuda:<index mod n>``); SLURM jobs each
    see only their own allocation, so they keep ``device``."""
    if not local or device not in ("auto", "cuda"):
        return device
    from hmil.launch.executors import visible_gpus

    n_gpus = len(visible_gpus())
    return f"cuda:{index % n_gpus}" if n_gpus > 1 else device


def _record(out: Path, kind: str, specs: list[ShardSpec], subs: list[ShardSubmission]) -> None:
    """``OUT/jobs/extract.json``: which job holds which slides, and where its log is."""
    record = {
        "launcher": kind,
        "submitted": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "shards": [
            {
                "index": s.index,
                "job_id": sub.job_id,
                "slides": list(s.slides),
                "stdout": str(sub.stdout),
                "stderr": str(sub.stderr),
            }
            for s, sub in zip(specs, subs, strict=True)
        ],
    }
    write_json_atomic(out / JOBS_DIR / EXTRACT_RECORD, record)


def _wait(
    jobs: list[submitit.Job[Any]],
    launch: ExtractLaunch,
    on_line: Callable[[str], None] | None,
    poll_s: float,
) -> list[ShardResult]:
    """Collect each shard's result as it ends (Ctrl-C cancels the shards and re-raises)."""
    results: dict[int, ShardResult] = {}
    pending = dict(enumerate(jobs))
    n = len(jobs)
    try:
        while pending:
            for index, job in list(pending.items()):
                if not job.done():
                    continue
                del pending[index]
                line = _collect(index, job, launch, results)
                if on_line is not None:
                    on_line(f"shard {index + 1}/{n}: {line}")
            if pending:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        for job in pending.values():
            job.cancel(check=False)
        raise
    return [results[i] for i in sorted(results)]


def _collect(
    index: int, job: submitit.Job[Any], launch: ExtractLaunch, results: dict[int, ShardResult]
) -> str:
    try:
        result: ShardResult = job.result()
    except Exception as exc:  # the shard's own error, re-raised by submitit
        lines = [line for line in str(exc).splitlines() if line.strip()]
        problem = f"{lines[-1].strip() if lines else type(exc).__name__} (log: {job.paths.stderr})"
        launch.failed_shards.append((index, problem))
        return f"failed: {problem}"
    results[index] = result
    return (
        f"{len(result.done)} extracted, {len(result.skipped)} already there, "
        f"{len(result.failed)} skipped with errors"
    )


def _log_error(where: str, problem: str) -> None:
    print(f"error: {where}: {problem}", file=sys.stderr, flush=True)
