"""The bad-input matrix: one line `error: <file>: <problem>`, exit 2, no traceback.

Each row builds one broken input in a fresh copy of a small SYNTHETIC cohort and runs the CLI
in-process; batch commands over several items are checked separately (skip + exit 3).
"""

from __future__ import annotations

import itertools
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


# ---- claimed sizes, coordinates, attributes, styles, splits, hashes, YAML


def forged_size_bag(env, tmp):
    """1.4 KB claiming 10⁹ × 16 floats; before: predict streamed fill values for > 100 s."""
    p = tmp / "forged.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("features", shape=(10**9, 16), dtype="f4", chunks=(1024, 16))
    assert p.stat().st_size < 2000
    return _predict(env, p), "claims shape (1000000000, 16) (64,000,000,000 bytes)", str(p)


def huge_coords(env, tmp):
    coords = np.array([[0, 0], [256, 0], [1e30, 0], [512, 0], [768, 0]], np.float64)
    p = _bag(tmp / "far.h5", np.ones((5, 16), np.float32), coords)
    return _predict(env, p), "coords must be level-0 pixels in [0, 2147483648)", str(p)


def negative_coords(env, tmp):
    coords = np.stack([np.arange(5) * 256 - 10_000, np.zeros(5)], 1).astype(np.int64)
    p = _bag(tmp / "neg.h5", np.ones((5, 16), np.float32), coords)
    return _predict(env, p), "found -10000 to", str(p)


def _heatmap(env, bag, tmp, *more):
    return ["heatmap", "--checkpoint", str(env["ckpt"]), "--bag", str(bag), "--level", "fine",
            "--label", "IC", "--out", str(tmp / "h.png"), "--device", "cpu", *more]  # fmt: skip


def _attr_bag(tmp, **attrs):
    p = _bag(tmp / "attrs.h5", np.ones((4, 16), np.float32), np.arange(8).reshape(4, 2) * 256)
    with h5py.File(p, "a") as f:
        for key, value in attrs.items():
            f["coords"].attrs[key] = value
    return p


def patch_size_text(env, tmp):
    p = _attr_bag(tmp, patch_size="abc")
    return _heatmap(env, p, tmp), "attribute 'patch_size' must be a positive number", str(p)


def patch_size_nan(env, tmp):
    p = _attr_bag(tmp, patch_size=float("nan"))
    return _heatmap(env, p, tmp), "'patch_size' must be a positive number, found nan", str(p)


def downsample_text(env, tmp):
    p = _attr_bag(tmp, patch_size=256, downsample="x")
    return _heatmap(env, p, tmp), "attribute 'downsample' must be a positive number", str(p)


def patch_size_flag_nan(env, tmp):
    bag = env["cohort"] / "features" / "synth-0000.h5"
    return _heatmap(env, bag, tmp, "--patch-size", "nan"), "must be a positive", "--patch-size"


def patch_size_flag_negative(env, tmp):
    bag = env["cohort"] / "features" / "synth-0000.h5"
    return _heatmap(env, bag, tmp, "--patch-size", "-256"), "got -256", "--patch-size"


def smooth_huge(env, tmp):
    """Before: a 59.6 GiB allocation (MemoryError traceback)."""
    bag = env["cohort"] / "features" / "synth-0000.h5"
    return _heatmap(env, bag, tmp, "--smooth", "1e9"), "must lie in [0, 64], got 1e+09", "--smooth"


def max_size_huge(env, tmp):
    bag = env["cohort"] / "features" / "synth-0000.h5"
    return _heatmap(env, bag, tmp, "--max-size", "1000000"), "[1, 16384]", "--max-size"


def _split_file(env, tmp, rows):
    splits = tmp / "splits"
    splits.mkdir()
    (splits / "splits_0.csv").write_text(",train,val,test\n" + "".join(f"{r}\n" for r in rows))
    return splits


def _rows(train, test):
    """CLAM split rows: index, train id, (no val), test id; the shorter column padded."""
    pairs = itertools.zip_longest(train, test, fillvalue="")
    return [f"{i},{t},,{s}" for i, (t, s) in enumerate(pairs)]


def _ids(env):
    return [line.split(",")[0] for line in (env["cohort"] / "labels.csv").read_text().split()[1:]]


def case_in_two_parts(env, tmp):
    """Two slides of one patient, one in train and one in test (before: trained silently)."""
    text = (env["cohort"] / "labels.csv").read_text().splitlines()
    head = text[0].split(",")
    col = head.index("case_id")
    rows = [r.split(",") for r in text[1:]]
    rows[1][col] = rows[0][col]  # slides 0 and 1: one case
    labels = tmp / "labels.csv"
    labels.write_text("\n".join([text[0], *(",".join(r) for r in rows)]) + "\n")
    ids = _ids(env)
    train, test = [ids[0], *ids[2:30]], [ids[1], *ids[30:]]
    splits = _split_file(env, tmp, _rows(train, test))
    argv = _train(env, tmp, labels=str(labels), splits=str(splits))
    return argv, f"case '{rows[0][col]}' has slides in both train", "splits_0.csv"


def slide_listed_twice(env, tmp):
    ids = _ids(env)
    train, test = [*ids[:30], ids[3]], ids[30:]
    splits = _split_file(env, tmp, _rows(train, test))
    return _train(env, tmp, splits=str(splits)), f"'{ids[3]}' is listed twice in train", "splits_0"


def flipped_checkpoint_byte(env, tmp):
    """Before: loaded, and predicted other numbers (max |Δp| 0.093 on the table's checkpoint)."""
    p = tmp / "flipped.pt"
    shutil.copy(env["ckpt"], p)
    flip_weight_byte(p)
    bag = env["cohort"] / "features" / "synth-0000.h5"
    return (
        ["predict", "--checkpoint", str(p), str(bag)],
        "does not match its stored SHA-256",
        str(p),
    )


def flip_weight_byte(path: Path) -> None:
    """Flip one exponent bit of a float in the largest tensor record of a torch zip file."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    n_name, n_extra = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + n_name + n_extra + 19] ^= 0x40
    path.write_bytes(bytes(data))


def hierarchy_duplicate_key(env, tmp):
    h = tmp / "dup.yaml"
    h.write_text(yaml_tree(fine="  N: benign\n  PB: benign\n  IC: malignant\n  N: malignant\n"))
    return _train(env, tmp, hierarchy=str(h)), "duplicate key 'N' (line 6, column 3)", str(h)


def yaml_tree(fine: str) -> str:
    return "coarse: [benign, malignant]\nfine:\n" + fine


def yaml_bomb_config(env, tmp):
    """Before: 150 s and still running (RSS 722 MB and growing) under a 6 GiB limit."""
    cfg = tmp / "bomb.yaml"
    levels = "".join(
        f"    {n}: &{n} [{','.join(['*' + p] * 9)}]\n"
        for p, n in zip("abcdefg", "bcdefgh", strict=True)
    )
    cfg.write_text('launcher:\n  extra:\n    a: &a ["lol","lol","lol","lol","lol"]\n' + levels)
    return _train(env, tmp, config=str(cfg)), "anchors (&a) are not allowed", str(cfg)


def _a_file(tmp):
    f = tmp / "afile"
    f.write_text("x")
    return f


def out_is_a_file_train(env, tmp):
    f = _a_file(tmp)
    return _train(env, tmp, out=str(f)), "exists and is a file, not a folder", str(f)


def out_is_a_file_split(env, tmp):
    f = _a_file(tmp)
    argv = ["split", "--labels", str(env["cohort"] / "labels.csv"), "--k", "3", "--out", str(f)]
    return argv, "exists and is a file, not a folder", str(f)


def out_is_a_file_tile(env, tmp):
    f = _a_file(tmp)
    return ["tile", str(tmp / "any.svs"), "--out", str(f)], "not a folder", str(f)


def out_under_a_file_extract(env, tmp):
    f = _a_file(tmp)
    argv = ["extract", str(tmp / "any.svs"), "--patches", str(tmp), "--out", str(f / "bags")]
    return argv, f"cannot be created: {f} is a file, not a folder", str(f / "bags")


def out_under_a_file_predict(env, tmp):
    f = _a_file(tmp)
    bag = env["cohort"] / "features" / "synth-0000.h5"
    argv = [*_predict(env, bag), "--out", str(f / "p.jsonl")]
    return argv, f"cannot be created: {f} is a file", str(f / "p.jsonl")


def out_is_a_folder_heatmap(env, tmp):
    bag = env["cohort"] / "features" / "synth-0000.h5"
    argv = _heatmap(env, bag, tmp)
    argv[argv.index("--out") + 1] = str(tmp)
    return argv, "is a folder; give a file name", str(tmp)


def geojson_under_a_file(env, tmp):
    """Before: the PNG was written, then a FileExistsError traceback for the GeoJSON."""
    f = _a_file(tmp)
    bag = env["cohort"] / "features" / "synth-0000.h5"
    argv = _heatmap(env, bag, tmp, "--geojson", str(f / "x.geojson"))
    return argv, "is a file, not a folder", str(f / "x.geojson")


def out_is_a_file_demo(env, tmp):
    f = _a_file(tmp)
    return ["demo", "--out", str(f)], "exists and is a file, not a folder", str(f)


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
    forged_size_bag,
    huge_coords,
    negative_coords,
    patch_size_text,
    patch_size_nan,
    downsample_text,
    patch_size_flag_nan,
    patch_size_flag_negative,
    smooth_huge,
    max_size_huge,
    case_in_two_parts,
    slide_listed_twice,
    flipped_checkpoint_byte,
    hierarchy_duplicate_key,
    yaml_bomb_config,
    out_is_a_file_train,
    out_is_a_file_split,
    out_is_a_file_tile,
    out_under_a_file_extract,
    out_under_a_file_predict,
    out_is_a_folder_heatmap,
    geojson_under_a_file,
    out_is_a_file_demo,
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
    assert not (tmp_path / "h.png").exists()  # a refused heatmap writes nothing


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
