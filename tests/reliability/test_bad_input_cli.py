"""The bad-input matrix (issue 7): one line `error: <file>: <problem>`, exit 2, no traceback.

Each row builds one broken input in a fresh copy of a small SYNTHETIC cohort and runs the CLI
in-process; batch commands over several items are checked separately (skip + exit 3).
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from hmil.cli import main
from hmil.train.runs import fold_paths


class _Evil:
    """Unpickling this runs code: a checkpoint or bag containing it must be refused."""

    def __reduce__(self):
        return (print, ("pwned",))


@pytest.fixture(scope="module")
def trained(small_cohort, tmp_path_factory) -> dict[str, Path]:
    """A cohort with splits and a 1-epoch run (fold 0)."""
    root = tmp_path_factory.mktemp("trained")
    splits = root / "splits"
    assert (
        main(
            [
                "split",
                "--labels",
                str(small_cohort / "labels.csv"),
                "--k",
                "3",
                "--out",
                str(splits),
                "--hierarchy",
                "bracs",
            ]
        )
        == 0
    )
    run = root / "run"
    assert (
        main(
            [
                "train",
                "--labels",
                str(small_cohort / "labels.csv"),
                "--features",
                str(small_cohort / "features"),
                "--splits",
                str(splits),
                "--hierarchy",
                "bracs",
                "--out",
                str(run),
                "--folds",
                "0",
                "--epochs",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    return {
        "cohort": small_cohort,
        "splits": splits,
        "run": run,
        "ckpt": fold_paths(run, 0).checkpoint,
    }


def _bag(path: Path, features, coords=None) -> Path:
    with h5py.File(path, "w") as f:
        f["features"] = features
        if coords is not None:
            f["coords"] = coords
    return path


def _predict(env: dict[str, Path], bag: Path) -> list[str]:
    return ["predict", "--checkpoint", str(env["ckpt"]), str(bag), "--device", "cpu"]


def _train(env: dict[str, Path], tmp: Path, **overrides: str) -> list[str]:
    args = {
        "labels": str(env["cohort"] / "labels.csv"),
        "features": str(env["cohort"] / "features"),
        "splits": str(env["splits"]),
        "hierarchy": "bracs",
        "out": str(tmp / "newrun"),
    }
    args.update(overrides)
    flat = [x for k, v in args.items() for x in (f"--{k}", v)]
    return ["train", *flat, "--folds", "0", "--epochs", "1", "--quiet", "--strict"]


# each case: (id, builder(env, tmp) -> argv, expected text in the message, file named in it)
Case = Callable[[dict[str, Path], Path], tuple[list[str], str, str]]


def empty_file(env, tmp):
    p = tmp / "empty.h5"
    p.write_bytes(b"")
    return _predict(env, p), "not a readable HDF5 bag", str(p)


def empty_pt(env, tmp):
    p = tmp / "empty.pt"
    p.write_bytes(b"")
    return _predict(env, p), "not a readable torch file", str(p)


def zero_instances(env, tmp):
    p = _bag(tmp / "zero.h5", np.zeros((0, 16), np.float32))
    return _predict(env, p), "0 instances", str(p)


def nan_features(env, tmp):
    x = np.ones((5, 16), np.float32)
    x[3, 2] = np.nan
    p = _bag(tmp / "nan.h5", x)
    return _predict(env, p), "non-finite feature values (NaN/Inf), first at instance 3", str(p)


def inf_features(env, tmp):
    x = np.ones((5, 16), np.float32)
    x[0, 0] = np.inf
    return _predict(env, _bag(tmp / "inf.h5", x)), "non-finite", "inf.h5"


def wrong_dim(env, tmp):
    p = _bag(tmp / "dim.h5", np.ones((5, 32), np.float32))
    return _predict(env, p), "feature dimension 32 does not match the model's 16", str(p)


def one_d(env, tmp):
    p = tmp / "oned.pt"
    torch.save(torch.ones(16), p)
    return _predict(env, p), "must be 2-D", str(p)


def three_d(env, tmp):
    p = tmp / "threed.pt"
    torch.save(torch.ones(2, 5, 16), p)
    return _predict(env, p), "must be 2-D", str(p)


def coords_mismatch(env, tmp):
    p = _bag(tmp / "coords.h5", np.ones((5, 16), np.float32), np.zeros((4, 2), np.int64))
    return _predict(env, p), "4 coords for 5 feature vectors", str(p)


def missing_bag(env, tmp):
    p = tmp / "missing.h5"
    return _predict(env, p), "bag file not found", str(p)


def evil_bag(env, tmp):
    p = tmp / "evil.pt"
    p.write_bytes(pickle.dumps({"features": _Evil()}))
    return _predict(env, p), "not a readable torch file", str(p)


def non_checkpoint(env, tmp):
    p = tmp / "notes.pt"
    p.write_text("hello")
    bag = env["cohort"] / "features" / "synth-0000.h5"
    return ["predict", "--checkpoint", str(p), str(bag)], "not a readable checkpoint", str(p)


def bare_state_dict(env, tmp):
    p = tmp / "state_dict.pt"
    torch.save({"w": torch.ones(2)}, p)
    bag = env["cohort"] / "features" / "synth-0000.h5"
    return ["predict", "--checkpoint", str(p), str(bag)], "not an HMIL checkpoint", str(p)


def evil_checkpoint(env, tmp):
    p = tmp / "evil_ckpt.pt"
    torch.save({"format": "hmil-checkpoint", "payload": _Evil()}, p)
    bag = env["cohort"] / "features" / "synth-0000.h5"
    return ["predict", "--checkpoint", str(p), str(bag)], "refused: not a plain-data", str(p)


def unknown_label(env, tmp):
    labels = tmp / "labels.csv"
    text = (env["cohort"] / "labels.csv").read_text().splitlines()
    text[2] = text[2].rsplit(",", 1)[0] + ",ZZZ"
    labels.write_text("\n".join(text) + "\n")
    return _train(env, tmp, labels=str(labels)), "label 'ZZZ'", str(labels)


def empty_label(env, tmp):
    labels = tmp / "labels.csv"
    text = (env["cohort"] / "labels.csv").read_text().splitlines()
    text[4] = text[4].rsplit(",", 1)[0] + ","
    labels.write_text("\n".join(text) + "\n")
    return _train(env, tmp, labels=str(labels)), "row 5", str(labels)


def duplicate_ids(env, tmp):
    labels = tmp / "labels.csv"
    text = (env["cohort"] / "labels.csv").read_text().splitlines()
    labels.write_text("\n".join([*text, text[1]]) + "\n")
    return _train(env, tmp, labels=str(labels)), "duplicate slide_id", str(labels)


def split_without_label(env, tmp):
    splits = tmp / "splits"
    splits.mkdir()
    (splits / "splits_0.csv").write_text(",train,val,test\n0,synth-0000,,synth-0001\n1,ghost,,\n")
    return _train(env, tmp, splits=str(splits)), "'ghost' has no row in the label table", "splits_0"


def hierarchy_without_parent(env, tmp):
    h = tmp / "tree.yaml"
    h.write_text("coarse: [a]\nfine:\n  x: a\n  y:\n")
    return _train(env, tmp, hierarchy=str(h)), "fine class 'y' has no parent", str(h)


def hierarchy_cycle(env, tmp):
    h = tmp / "cycle.yaml"
    h.write_text("coarse: [a]\nfine:\n  x: y\n  y: x\n")
    return _train(env, tmp, hierarchy=str(h)), "itself a fine class", str(h)


def malformed_config(env, tmp):
    cfg = tmp / "cfg.yaml"
    cfg.write_text("train:\n  epochz: 3\n")
    return _train(env, tmp, config=str(cfg)), "unknown config key 'train.epochz'", str(cfg)


def other_hierarchy_checkpoint(env, tmp):
    run = tmp / "run"
    shutil.copytree(env["run"], run)
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace("hierarchy: bracs", "hierarchy: panda"))
    return ["evaluate", "--run", str(run), "--fold", "0"], "checkpoint hierarchy", "checkpoint.pt"


def missing_labels_file(env, tmp):
    p = tmp / "nope.csv"
    return _train(env, tmp, labels=str(p)), "label table not found", str(p)


CASES: list[Case] = [
    empty_file,
    empty_pt,
    zero_instances,
    nan_features,
    inf_features,
    wrong_dim,
    one_d,
    three_d,
    coords_mismatch,
    missing_bag,
    evil_bag,
    non_checkpoint,
    bare_state_dict,
    evil_checkpoint,
    unknown_label,
    empty_label,
    duplicate_ids,
    split_without_label,
    hierarchy_without_parent,
    hierarchy_cycle,
    malformed_config,
    other_hierarchy_checkpoint,
    missing_labels_file,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_gives_one_clear_line_and_exit_2(case, trained, tmp_path, capsys):
    argv, problem, where = case(trained, tmp_path)
    code = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert problem in lines[0] and where in lines[0], lines[0]
    assert "Traceback" not in captured.err and "pwned" not in captured.out


def test_predict_over_many_bags_skips_the_bad_one(trained, tmp_path, capsys):
    good = trained["cohort"] / "features" / "synth-0001.h5"
    bad = _bag(tmp_path / "bad.h5", np.full((3, 16), np.nan, np.float32))
    out = tmp_path / "preds.jsonl"
    code = main(
        [
            "predict",
            "--checkpoint",
            str(trained["ckpt"]),
            str(good),
            str(bad),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 3
    assert f"error: {bad}: non-finite" in capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["slide_id"] for r in records] == ["synth-0001"]
    strict = main(
        [
            "predict",
            "--checkpoint",
            str(trained["ckpt"]),
            str(good),
            str(bad),
            "--out",
            str(tmp_path / "strict.jsonl"),
            "--strict",
        ]
    )
    assert strict == 2
    assert not (tmp_path / "strict.jsonl").exists()  # nothing half-written
