"""The submitit backends behind the ``local`` and ``slurm`` launchers: the registry refuses a
kind that runs no jobs, sbatch options come from the launcher config, and no option may carry a
line break into the job script."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import submitit

from hmil.config import LauncherConfig
from hmil.errors import ConfigError, RunError
from hmil.launch.executors import (
    BACKENDS,
    backend,
    children_stderr_to,
    make_executor,
    slurm_parameters,
    usable_cpus,
    visible_gpus,
)


def test_backends_wait_locally_and_leave_slurm_jobs_running() -> None:
    assert set(BACKENDS) == {"local", "slurm"}
    assert backend("local").waits and backend("local").slots
    assert not backend("slurm").waits and not backend("slurm").slots


def test_a_kind_without_jobs_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        backend("inline")
    assert info.value.where == "launcher.kind"
    assert "'inline' runs no jobs" in info.value.problem and "local, slurm" in info.value.problem


def test_slurm_parameters_come_from_the_config() -> None:
    cfg = LauncherConfig(
        kind="slurm", partition="gpu", gpus_per_job=2, cpus_per_job=8, mem_gb=0, time_min=90,
        extra={"constraint": "a100", "nodes": 2},
    )  # fmt: skip
    params = slurm_parameters(cfg, "hmil-train")
    assert params == {
        "job_name": "hmil-train",
        "time": 90,
        "nodes": 2,  # extra overrides
        "ntasks_per_node": 1,
        "cpus_per_task": 8,
        "gpus_per_node": 2,
        "partition": "gpu",
        "constraint": "a100",
    }  # mem 0 and empty account/qos are not requested
    assert slurm_parameters(LauncherConfig(kind="slurm"), "j")["mem"] == "32GB"


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ({"constraint": "a100\nrm -rf /"}, "launcher.constraint"),
        ({"additional_parameters": {"x\ty": "1"}}, "launcher.additional_parameters.x\ty"),
        ({"exclude": ["n1", "n2\r"]}, "launcher.exclude"),
    ],
)
def test_slurm_options_must_be_one_line(extra: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        slurm_parameters(LauncherConfig(kind="slurm", extra=extra), "j")
    assert info.value.where == where
    assert "#SBATCH" in info.value.problem


def test_setup_lines_are_shell_lines_by_design() -> None:
    params = slurm_parameters(LauncherConfig(kind="slurm", extra={"setup": ["a\nb"]}), "j")
    assert params["setup"] == ["a\nb"]


def test_local_executor_takes_the_time_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    executor = make_executor("local", tmp_path / "jobs", LauncherConfig(time_min=7), "j")
    assert isinstance(executor, submitit.LocalExecutor)
    assert executor.parameters["timeout_min"] == 7
    assert "visible_gpus" not in executor.parameters


def test_slurm_without_srun_is_a_run_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here
    with pytest.raises(RunError) as info:
        make_executor("slurm", tmp_path / "jobs", LauncherConfig(kind="slurm"), "j")
    assert info.value.where == "launcher.kind"
    assert info.value.problem.startswith("slurm: ") and "login node" in info.value.problem


@pytest.mark.parametrize(
    ("env", "expected"), [("2,3", (2, 3)), ("", ()), ("GPU-aa,GPU-bb", (0, 1)), ("1, 0", (1, 0))]
)
def test_visible_gpus_keep_the_physical_numbering(
    monkeypatch: pytest.MonkeyPatch, env: str, expected: tuple[int, ...]
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    assert visible_gpus() == expected


def test_usable_cpus_is_the_affinity_mask() -> None:
    assert usable_cpus() == len(os.sched_getaffinity(0)) >= 1


def test_children_stderr_goes_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "jobs" / "controllers.log"
    with children_stderr_to(log):
        os.write(2, b"from a child\n")
    print("back on stderr", file=sys.stderr)
    assert log.read_text() == "from a child\n"
