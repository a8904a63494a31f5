"""``hmil demo`` end to end on a tiny synthetic cohort: every step runs for real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import hmil
from hmil.cli import main
from hmil.demo.classes import demo_hierarchy

pytestmark = pytest.mark.slow

ARGS = ["--slides", "12", "--folds", "2", "--epochs", "2", "--slide-size", "1024", "--quiet"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("demo")
    out, ckpt = root / "demo", root / "ckpt"
    argv = ["demo", "--out", str(out), *ARGS, "--update-checkpoint", "--checkpoint-dir", str(ckpt)]
    code = main(argv)
    assert code == 0
    return out, ckpt, ""


def test_demo_runs_every_step(demo: tuple[Path, Path, str], capsys: pytest.CaptureFixture) -> None:
    out, _, _ = demo
    slides = sorted((out / "slides").glob("synth-*.tiff"))
    assert len(slides) == 12
    assert len(list((out / "tiles" / "patches").glob("*.h5"))) == 12
    assert len(list((out / "features").glob("*.h5"))) == 12
    assert sorted(p.name for p in (out / "splits").glob("*.csv")) == [
        "splits_0.csv",
        "splits_1.csv",
    ]
    summary = json.loads((out / "run" / "summary.json").read_text())
    assert summary["n_folds"] == 2
    assert 0.0 <= summary["fine"]["balanced_accuracy"]["mean"] <= 1.0
    for fold in (0, 1):
        assert (out / "run" / f"fold_{fold}" / "checkpoint.pt").is_file()
        assert (out / "run" / f"fold_{fold}" / "predictions.csv").is_file()


def test_demo_checkpoint_predicts_with_the_demo_hierarchy(demo: tuple[Path, Path, str]) -> None:
    out, ckpt, _ = demo
    predictor = hmil.load_checkpoint(ckpt / "checkpoint.pt", device="cpu")
    bag = sorted((out / "features").glob("*.h5"))[0]
    record = predictor.predict(bag).to_dict()
    assert set(record["fine"]["probs"]) == set(demo_hierarchy().fine)
    assert sum(record["fine"]["probs"].values()) == pytest.approx(1.0, abs=1e-5)
    card = (ckpt / "MODEL_CARD.md").read_text()
    assert "SYNTHETIC" in card
    summary = json.loads((out / "run" / "summary.json").read_text())
    fine = summary["fine"]["balanced_accuracy"]
    assert f"{fine['mean']:.3f} ± {fine['std']:.3f}" in card
    assert "--slides 12 --folds 2 --epochs 2" in card
    assert "1 bag per optimiser step" in card  # the default, in the singular
    assert "exponential moving average over 0.5 epochs" in card  # train.ema_epochs, the default


def test_rerun_reuses_finished_steps(
    demo: tuple[Path, Path, str], capsys: pytest.CaptureFixture
) -> None:
    out, _, _ = demo
    watched = [
        out / "slides" / "synth-000.tiff",
        out / "tiles" / "patches" / "synth-000.h5",
        out / "features" / "synth-000.h5",
        out / "run" / "fold_0" / "checkpoint.pt",
    ]
    before = [p.stat().st_mtime_ns for p in watched]
    assert main(["demo", "--out", str(out), *ARGS]) == 0
    assert [p.stat().st_mtime_ns for p in watched] == before
    assert f"hmil view {out / 'run'}" in capsys.readouterr().out


def test_rerun_with_other_settings_is_one_error_line(
    demo: tuple[Path, Path, str], capsys: pytest.CaptureFixture
) -> None:
    out, _, _ = demo
    other = ["--slides", "13", "--folds", "2", "--epochs", "2", "--slide-size", "1024", "--quiet"]
    assert main(["demo", "--out", str(out), *other]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {out}: holds a demo cohort built with different settings")
