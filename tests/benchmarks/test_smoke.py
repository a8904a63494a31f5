"""Smoke tests: every benchmark script runs in its quickest mode and writes its result files.

Benchmarks are scripts, not timed tests: nothing here checks a speed or an accuracy, only that
each script runs end to end and reports what it promises.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ("accuracy", "calibration", "speed", "streaming_memory", "gpu_check")
DEFAULTS = "HMIL defaults (hmil train with no config)"
FEW = (
    f"{DEFAULTS},HMIL --preset paper,ABMIL gated (torchmil),CLAM-MB (hmil.model.baselines),"
    "flat gated attention (hmil recipe: EMA + constant lr + sampler if imbalanced)"
)


def _run(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    proc = _run([f"benchmarks.{script}", "--help"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout.lower()


@pytest.mark.slow
@pytest.mark.skipif(not _has("torchmil"), reason="needs the bench extra (torchmil)")
def test_accuracy_quick(tmp_path):
    proc = _run(["benchmarks.accuracy", "--quick", "--variants", FEW, "--out", str(tmp_path),
                 "--work", str(tmp_path / "work")])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "accuracy.json").read_text())
    assert result["synthetic"] is True
    rows = result["summary"]["gen-small"]
    assert set(FEW.split(",")) <= set(rows)
    for name in FEW.split(","):
        assert 0 <= rows[name]["fine_balanced_accuracy"]["mean"] <= 1
        assert "coarse_macro_auc" in rows[name]
    # class-wise models report all three attention numbers, the oracle its ceiling
    assert {"attention_auroc", "other_rows_auroc", "row_correlation"} <= set(rows[DEFAULTS])
    assert "attention_auroc" in rows["oracle per-instance detector"]
    (verdict,) = result["verdicts"]
    assert verdict.startswith("gen-small: defaults fine bacc")
    assert "Do the defaults win?" in (tmp_path / "accuracy.md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not _has("torchmil"), reason="needs the bench extra (torchmil)")
def test_accuracy_merge_renames_cohorts(tmp_path):
    # two runs of the same cohort (e.g. two budgets) stay apart when one is renamed
    for tag in ("a", "b"):
        args = ["--quick", "--variants", DEFAULTS, "--tag", tag, "--work", str(tmp_path / tag)]
        proc = _run(["benchmarks.accuracy", *args, "--out", str(tmp_path)])
        assert proc.returncode == 0, proc.stderr[-2000:]
    parts = [str(tmp_path / "a.json"), f"{tmp_path / 'b.json'}=gen-small-longer"]
    proc = _run(["benchmarks.accuracy", "--merge", *parts, "--out", str(tmp_path), "--tag", "m"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    merged = json.loads((tmp_path / "m.json").read_text())
    assert set(merged["summary"]) == {"gen-small", "gen-small-longer"}
    assert {r["cohort"] for r in merged["runs"]} == {"gen-small", "gen-small-longer"}
    # the renamed rows keep their budget in the header
    assert merged["settings_per_cohort"]["gen-small-longer"]["epochs"] == 2
    assert "gen-small-longer: epochs 2," in (tmp_path / "m.md").read_text()
    # a merged file merged again keeps the machines of its parts, not the merging one's
    again = [str(tmp_path / "m.json"), f"{tmp_path / 'a.json'}=gen-small-again"]
    proc = _run(["benchmarks.accuracy", "--merge", *again, "--out", str(tmp_path), "--tag", "m2"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    machines = json.loads((tmp_path / "m2.json").read_text())["parts_machines"]
    assert len(machines) == 3 and all("note" not in m for m in machines)


@pytest.mark.slow
@pytest.mark.skipif(not _has("matplotlib"), reason="needs the bench extra (matplotlib)")
def test_calibration_quick(tmp_path):
    proc = _run(["benchmarks.calibration", "--quick", "--out", str(tmp_path), "--work",
                 str(tmp_path / "work")])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "calibration.json").read_text())
    assert result["synthetic"] is True
    (run,) = result["runs"]
    assert run["cohort"] == "digits" and run["T_fine"] > 0
    for level in ("fine", "coarse", "coarse_head"):
        # temperature scaling never moves the argmax
        assert run[f"{level}.bacc_before"] == run[f"{level}.bacc_after"]
        assert 0 <= run[f"{level}.ece_after"] <= 1
    for target in (0.8, 0.9, 0.95):
        shares = [run[f"call{target}.share_{k}"] for k in ("fine", "coarse", "none")]
        assert sum(shares) == pytest.approx(1.0)
        assert 0 <= run[f"call{target}.coverage"] <= 1
    assert set(run["risk_coverage"]) == {"fine", "coarse", "coarse_head"}
    text = (tmp_path / "calibration.md").read_text()
    assert "SYNTHETIC" in text and "| digits | 1 |" in text
    assert (tmp_path / "calibration_risk.png").stat().st_size > 1000
    # a second invocation with --resume trains nothing and reports the same run
    again = _run(["benchmarks.calibration", "--quick", "--resume", "--out", str(tmp_path),
                  "--work", str(tmp_path / "work")])  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "calibration.json").read_text())["runs"] == result["runs"]


@pytest.mark.slow
@pytest.mark.skipif(not _has("matplotlib"), reason="needs the bench extra (matplotlib)")
def test_calibration_quick_with_a_further_draw(tmp_path):
    proc = _run(["benchmarks.calibration", "--quick", "--cohorts", "gen-small", "--extra-test",
                 "60", "--out", str(tmp_path), "--work", str(tmp_path / "work")])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = json.loads((tmp_path / "calibration.json").read_text())["runs"]
    assert run["cohort"] == "gen-small" and run["draw.n"] == 60
    for key in ("fine.ece_before", "fine.ece_after", "fine.ece_floor", "fine.bacc_after",
                "call0.9.coverage", "call0.9.share_fine"):  # fmt: skip
        assert 0 <= run[f"draw.{key}"] <= 1, key
    assert 0 <= run["draw.fine.brier_after"] <= 2 and run["draw.fine.nll_after"] >= 0
    assert run["draw.fine.bacc_before"] == run["draw.fine.bacc_after"]
    text = (tmp_path / "calibration.md").read_text()
    said = "a further draw of 60 SYNTHETIC bags from the same generator (same class directions"
    assert said + ", new bags)" in text
    assert "| fine ECE after, 60-bag draw | floor at 60 |" in text
    assert "on the 60-bag draw" in text


def test_negative_extra_test_is_one_error_line(tmp_path):
    proc = _run(["benchmarks.calibration", "--extra-test", "-1", "--work", str(tmp_path)], 120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --extra-test: -1 is below 0"


def test_unknown_calibration_cohort_is_one_error_line(tmp_path):
    proc = _run(["benchmarks.calibration", "--cohorts", "nope", "--work", str(tmp_path)], 120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --cohorts: unknown ['nope']"


def test_unknown_variant_is_one_error_line(tmp_path):
    proc = _run(["benchmarks.accuracy", "--variants", "nope", "--work", str(tmp_path)], 120)
    assert proc.returncode != 0
    assert proc.stderr.strip() == "error: --variants: unknown ['nope'] (see --list)"


@pytest.mark.slow
@pytest.mark.skipif(
    not (_has("torchmil") and _has("matplotlib") and _has("psutil")),
    reason="needs the bench extra (torchmil, matplotlib, psutil)",
)
def test_speed_quick(tmp_path):
    proc = _run(["benchmarks.speed", "--quick", "--out", str(tmp_path), "--work",
                 str(tmp_path / "work")])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "speed_quick.json").read_text())
    models = {r["model"] for r in result["forward"] if "error" not in r}
    assert {"hmil", "abmil", "flat_gated"} <= models
    assert all("ratio_vs_matmul" in r for r in result["forward"])
    assert {r["model"] for r in result["train"]} == {"hmil", "abmil"}
    assert result["heatmap"]["seconds"] > 0
    assert (tmp_path / "speed_quick_throughput.png").is_file()
    assert (tmp_path / "speed_quick_memory.png").is_file()


@pytest.mark.slow
def test_streaming_memory_quick(tmp_path):
    proc = _run(["benchmarks.streaming_memory", "--quick", "--out", str(tmp_path), "--work",
                 str(tmp_path / "work")])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "streaming_memory_quick.json").read_text())
    assert result["n_instances_reported"] == result["n"]
    assert all(r["rc"] == 0 and r["peak_rss_mb"] > 0 for r in result["runs"].values())
    assert result["max_abs_diff_vs_float64_reference"] <= 1e-5
    assert not (tmp_path / "work" / "big_bag.h5").exists()  # the bag is deleted


@pytest.mark.slow
def test_gpu_check_runs_on_cpu(tmp_path):
    proc = _run(["benchmarks.gpu_check", "--device", "cpu", "--quick", "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check_cpu_quick.json").read_text())
    assert result["exactness"]["pass_fp32_1e-5"] is True
    assert {r["model"] for r in result["speed"]} == {"hmil", "flat_gated"}
    assert "streamed" in result["host_bag"]
