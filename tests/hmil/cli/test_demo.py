"""``hmil demo``: the settings it passes to the pipeline and what it prints (the pipeline itself
is replaced here; tests/hmil/demo/test_pipeline_end_to_end.py runs it for real)."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pytest

from hmil.cli import demo as demo_cli
from hmil.cli import main
from hmil.demo import pipeline
from hmil.demo.pipeline import DemoConfig, DemoResult

SUMMARY = {
    "n_folds": 2,
    "coarse": {"balanced_accuracy": {"mean": 0.9, "std": 0.05}},
    "fine": {"balanced_accuracy": {"mean": 0.75, "std": 0.1}, "macro_auc": {"mean": 0.8, "std": 0}},
}


@pytest.fixture()
def seen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[DemoConfig]:
    """The configs ``hmil demo`` ran the pipeline with; the pipeline returns a fixed result."""
    configs: list[DemoConfig] = []

    def fake_run_demo(config: DemoConfig, progress: bool = True) -> DemoResult:
        configs.append(config)
        skipped = [("slide-3", "unreadable")] if config.seed == 13 else []
        return DemoResult(
            cohort=SimpleNamespace(root=config.out),  # type: ignore[arg-type]  # unread here
            run_dir=config.out / "run",
            summary=SUMMARY,
            seconds={"cohort": 1.5, "train": 20.0},
            skipped=skipped,
        )

    monkeypatch.setattr(pipeline, "run_demo", fake_run_demo)
    return configs


def test_settings_reach_the_pipeline_and_the_results_are_printed(
    seen: list[DemoConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "my demo"
    argv = ["demo", "--out", str(out), "--slides", "12", "--folds", "2", "--epochs", "3"]
    assert main([*argv, "--slide-size", "1024", "--device", "cpu", "--quiet"]) == 0
    (config,) = seen
    assert (config.out, config.n_slides, config.folds, config.epochs) == (out, 12, 2, 3)
    assert (config.min_size, config.max_size, config.device) == (768, 1024, "cpu")
    assert capsys.readouterr().out.splitlines() == [
        "test coarse: balanced_accuracy 0.900 ± 0.050 over 2 folds",
        "test fine: balanced_accuracy 0.750 ± 0.100, macro_auc 0.800 ± 0.000 over 2 folds",
        "time: 22s (cohort 1.5s, train 20s)",
        "All data in this demo is SYNTHETIC. To look at it:",
        f"  hmil view '{out / 'run'}'",
    ]


def test_small_slides_keep_a_floor_and_skipped_items_exit_3(
    seen: list[DemoConfig], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # the default --out is relative
    assert main(["demo", "--slide-size", "600", "--seed", "13", "--quiet"]) == 3
    assert (seen[0].min_size, seen[0].max_size, seen[0].out) == (512, 600, Path("hmil-demo"))


def test_the_model_card_command_reproduces_the_demo() -> None:
    args = argparse.Namespace(
        out="d 1", slides=48, folds=3, epochs=30, seed=0, device="auto", slide_size=4096
    )
    assert demo_cli._command(args) == (
        "hmil demo --out 'd 1' --slides 48 --folds 3 --epochs 30 --seed 0 --device auto "
        "--slide-size 4096 --update-checkpoint"
    )
