"""SLURM submission without a cluster: the real submitit SlurmExecutor runs a fake ``sbatch``
(see conftest), and the generated sbatch scripts, job records and pickled jobs are checked.
``hmil status`` reads job states from a fake ``sacct``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from scaleout_helpers import train_args
from submitit.helpers import DelayedSubmission

from hmil.cli import main
from hmil.config import LauncherConfig
from hmil.io import read_jsonl, write_json_atomic
from hmil.launch import launch_extraction
from hmil.launch.folds import FoldJob, FoldJobSpec
from hmil.train.runs import fold_paths

SLURM = [
    "--launcher",
    "slurm",
    "--partition",
    "gpu",
    "--gpus-per-job",
    "1",
    "--cpus-per-job",
    "8",
    "--mem-gb",
    "64",
    "--time-min",
    "120",
    "--account",
    "lab",
    "--qos",
    "high",
]


def _strip_times(metrics: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in read_jsonl(metrics)]


def _sbatch_flags(script: str) -> set[str]:
    return {line for line in script.splitlines() if line.startswith("#SBATCH")}


def test_each_fold_is_one_sbatch_job_with_the_launcher_parameters(
    small_cohort: Path,
    split_cohort: Path,
    tmp_path: Path,
    fake_slurm: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "launcher:\n  partition: cpu\n  extra: {constraint: a100, signal_delay_s: 120}\n"
    )
    run = tmp_path / "run"
    args = train_args(
        small_cohort,
        split_cohort,
        run,
        "--folds",
        "0,2",
        "--epochs",
        "5",
        "--config",
        str(config),
        *SLURM,
    )
    assert main(args) == 0
    out = capsys.readouterr().out
    jobs = run / "jobs"
    assert f"fold 0: slurm job 4242, log {jobs}/4242_0_log.err" in out
    assert "fold 2: slurm job 4243" in out and f"hmil status {run}" in out

    script = (fake_slurm / "sbatch_4242.sh").read_text()
    assert script.startswith("#!/bin/bash")
    assert _sbatch_flags(script) == {
        "#SBATCH --job-name=hmil-run",
        "#SBATCH --partition=gpu",  # the flag overrides the config file
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64GB",
        "#SBATCH --time=120",
        "#SBATCH --account=lab",
        "#SBATCH --qos=high",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --constraint=a100",  # launcher.extra, passed to submitit as is
        "#SBATCH --signal=USR2@120",  # time to requeue before the time limit
        f"#SBATCH --output={jobs}/%j_0_log.out",
        f"#SBATCH --error={jobs}/%j_0_log.err",
        "#SBATCH --open-mode=append",
        "#SBATCH --wckey=submitit",
    }
    command = script.strip().splitlines()[-1]
    assert command.startswith(f"srun --unbuffered --output {jobs}/%j_%t_log.out")
    assert command.endswith(f"{sys.executable} -u -m submitit.core._submit {jobs}")
    (submitted,) = (fake_slurm / "sbatch_4242.args").read_text().split()  # `sbatch SCRIPT`
    assert Path(submitted).resolve() == (jobs / "4242_submission.sh").resolve()
    assert (jobs / "4242_submission.sh").read_text() == script

    job = json.loads((fold_paths(run, 0).root / "job.json").read_text())
    assert {k: job[k] for k in ("launcher", "job_id", "fold", "threads", "slots")} == {
        "launcher": "slurm",
        "job_id": "4242",
        "fold": 0,
        "threads": 8,
        "slots": 0,
    }
    assert job["stderr"] == f"{jobs}/4242_0_log.err"
    assert job["submission_file"] == f"{jobs}/4242_submission.sh"
    # the pickled job is the fold job of this run: it needs nothing but RUN/config.yaml
    delayed = DelayedSubmission.load(jobs / "4243_submitted.pkl")
    assert isinstance(delayed.function, FoldJob)
    assert delayed.args == (FoldJobSpec(str(run.resolve()), 2, threads=8),)
    stored = (run / "config.yaml").read_text()
    assert "kind: slurm" in stored and "constraint: a100" in stored

    # hmil status: one sacct call for all folds; SLURM's states decide queued/running/ended
    node = {"host": "gpu-node-17", "pid": 4321}
    write_json_atomic(
        fold_paths(run, 0).status,
        {
            **node,
            "state": "running",
            "epoch": 1,
            "epochs": 5,
            "best_value": 0.75,
            "best_epoch": 1,
            "select_metric": "fine_auc",
            "eta_s": 90.0,
            "updated": "2999-01-01T00:00:00+00:00",
        },
    )
    write_json_atomic(fold_paths(run, 0).lock, node)
    (fold_paths(run, 0).metrics).write_text('{"epoch": 0}\n{"epoch": 1}\n')
    (fake_slurm / "sacct.txt").write_text("4242|RUNNING\n4243|PENDING\n")
    assert main(["status", str(run), "--json"]) == 0
    folds = {f["fold"]: f for f in json.loads(capsys.readouterr().out)["folds"]}
    assert sorted(folds) == [0, 2]
    assert folds[0]["state"] == "running" and folds[0]["epochs_done"] == 2
    assert folds[0]["job_id"] == "4242" and folds[0]["scheduler_state"] == "RUNNING"
    assert folds[0]["best_value"] == 0.75 and folds[0]["eta_s"] == 90.0
    assert folds[2]["state"] == "queued" and folds[2]["scheduler_state"] == "PENDING"
    calls = (fake_slurm / "sacct.calls").read_text().splitlines()
    assert len(calls) == 1 and "-j 4242,4243" in calls[0]

    (fake_slurm / "sacct.txt").write_text("4242|CANCELLED by 1000\n4243|FAILED\n")
    assert main(["status", str(run)]) == 0
    table = capsys.readouterr().out
    assert "2 fold(s): 1 failed, 1 interrupted" in table
    assert "slurm 4242 CANCELLED" in table
    assert f"fold 2: job 4243 ended FAILED; see {jobs}/4243_0_log.err" in table

    # a new launch refuses folds whose jobs are still alive
    (fake_slurm / "sacct.txt").write_text("4242|RUNNING\n4243|PENDING\n")
    assert main([*args, "--resume"]) == 2
    assert "already running (slurm job 4242)" in capsys.readouterr().err


def test_a_preempted_fold_job_requeues_itself_as_a_resume() -> None:
    spec = FoldJobSpec("/runs/r", 3, threads=4)
    again = FoldJob().checkpoint(spec)
    assert isinstance(again.function, FoldJob)
    assert again.args == (FoldJobSpec("/runs/r", 3, resume=True, threads=4),)


def test_bad_slurm_settings_are_reported_before_submitting(
    small_cohort: Path,
    split_cohort: Path,
    tmp_path: Path,
    fake_slurm: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("launcher:\n  extra: {gpu_model: a100}\n")
    args = train_args(
        small_cohort,
        split_cohort,
        tmp_path / "run",
        "--folds",
        "0",
        "--config",
        str(config),
        "--launcher",
        "slurm",
    )
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: launcher.extra: Unavailable parameter(s): ['gpu_model']")
    assert not list(fake_slurm.glob("sbatch_*"))


@pytest.mark.skipif(shutil.which("srun") is not None, reason="this machine has SLURM")
def test_slurm_without_srun_is_a_clear_error(
    small_cohort: Path, split_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = train_args(small_cohort, split_cohort, tmp_path / "run", "--launcher", "slurm")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: --launcher: slurm: Could not detect "srun"')


def test_extraction_shards_are_one_job_array(tmp_path: Path, fake_slurm: Path) -> None:
    patches = tmp_path / "tiles" / "patches"
    patches.mkdir(parents=True)
    out = tmp_path / "bags"
    out.mkdir()
    (out / "s3.h5").write_bytes(b"")  # s3 has its bag already: not submitted
    slides = [tmp_path / f"s{i}.svs" for i in range(5)]
    launch = launch_extraction(
        slides,
        tmp_path / "tiles",
        out,
        shards=2,
        launcher=LauncherConfig(kind="slurm", partition="cpu", cpus_per_job=6, mem_gb=16),
    )
    assert launch.already == ["s3"] and launch.results is None
    assert [s.job_id for s in launch.submitted] == ["4242_0", "4242_1"]
    assert not (fake_slurm / "sbatch_4243.sh").exists()  # one sbatch call for the array
    flags = _sbatch_flags((fake_slurm / "sbatch_4242.sh").read_text())
    assert {
        "#SBATCH --array=0-1%2",
        "#SBATCH --job-name=hmil-extract",
        "#SBATCH --partition=cpu",
        "#SBATCH --cpus-per-task=6",
        "#SBATCH --mem=16GB",
        f"#SBATCH --output={out}/jobs/%A_%a_0_log.out",
    } <= flags
    record = json.loads((out / "jobs" / "extract.json").read_text())
    shards = [[Path(p).name for p in s["slides"]] for s in record["shards"]]
    assert shards == [["s0.svs", "s2.svs"], ["s1.svs", "s4.svs"]]  # round-robin over pending
    delayed = DelayedSubmission.load(out / "jobs" / "4242_1_submitted.pkl")
    spec = delayed.args[0]
    assert spec.config.torch_threads == 6 - spec.config.num_readers and spec.device == "auto"


@pytest.mark.slow
def test_the_submitted_job_trains_the_fold_as_on_a_node(
    small_cohort: Path, split_cohort: Path, tmp_path: Path, fake_slurm: Path
) -> None:
    """Run the pickled job the way the sbatch script's ``srun`` line does, with the
    environment SLURM gives a job, and compare it with inline training."""
    common = [
        "--folds",
        "1",
        "--epochs",
        "2",
        "--bags-per-step",
        "8",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--quiet",
    ]
    assert main(train_args(small_cohort, split_cohort, tmp_path / "inline", *common)) == 0
    run = tmp_path / "run"
    assert main(train_args(small_cohort, split_cohort, run, *common, "--launcher", "slurm")) == 0
    env = {
        **os.environ,
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_JOB_NODELIST": socket.gethostname(),
    }
    cmd = [sys.executable, "-u", "-m", "submitit.core._submit", str(run / "jobs")]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    assert _strip_times(fold_paths(run, 1).metrics) == _strip_times(
        fold_paths(tmp_path / "inline", 1).metrics
    )
    assert (run / "jobs" / "4242_0_result.pkl").is_file()
    (fake_slurm / "sacct.txt").write_text("4242|COMPLETED\n")
    assert main(["status", str(run), "--json"]) == 0
