"""The cohort's encoder travels into the checkpoint: TRIDENT-named bags (SYNTHETIC features in
TRIDENT's job-folder layout) → train → checkpoint → predict/heatmap warn on another encoder's."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

import hmil
from hmil.checkpoint import load_checkpoint_file
from hmil.cli import main
from hmil.data.labels import read_labels
from hmil.data.provenance import EncoderRef
from hmil.data.splits import make_splits, write_splits
from hmil.demo.model_card import encoder_line
from hmil.errors import ConfigError
from hmil.hierarchy import Hierarchy
from hmil.model_info import model_provenance
from hmil.synthetic import CohortSpec, SyntheticBag, make_cohort
from hmil.train.cohort import checkpoint_encoder, gather_fold

BRACS = Hierarchy.preset("bracs")
#: a small network: the test is about what the checkpoint records, not about learning
SMALL = ["--model.hidden_dim", "16", "--model.coarse_dim", "16", "--model.fine_dim", "8",
         "--model.coarse_attention_dim", "8", "--model.fine_attention_dim", "8"]  # fmt: skip


def write_trident_job(bags: list[SyntheticBag], coords_dir: Path, encoder: str) -> Path:
    """TRIDENT's layout: ``patches/<id>_patches.h5`` (``coords``, ``patch_size_level0``) and
    ``features_<encoder>/<id>.pt`` (``torch.save`` of the numpy features, no encoder recorded).
    Returns the features folder."""
    features = coords_dir / f"features_{encoder}"
    features.mkdir(parents=True, exist_ok=True)
    (coords_dir / "patches").mkdir(exist_ok=True)
    for bag in bags:
        patches = coords_dir / "patches" / f"{bag.slide_id}_patches.h5"
        if not patches.is_file():
            with h5py.File(patches, "w") as f:
                dset = f.create_dataset("coords", data=bag.coords.astype(np.int64))
                dset.attrs["patch_size"] = bag.patch_size
                dset.attrs["patch_size_level0"] = bag.patch_size
        torch.save(bag.features.astype(np.float32), features / f"{bag.slide_id}.pt")
    return features


@pytest.fixture(scope="module")
def trident(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """14 SYNTHETIC slides extracted "by" uni_v1, and two by resnet50, in one TRIDENT job."""
    root = tmp_path_factory.mktemp("trident")
    spec = CohortSpec(n_slides=14, dim=8, grid_min=3, grid_max=4, key_fraction=0.2)
    bags = make_cohort(BRACS, spec, seed=3)
    coords_dir = root / "job" / "20x_256px_0px_overlap"
    uni = write_trident_job(bags, coords_dir, "uni_v1")
    resnet = write_trident_job(bags[:2], coords_dir, "resnet50")
    labels = root / "labels.csv"
    pd.DataFrame({
        "slide_id": [b.slide_id for b in bags], "case_id": [b.case_id for b in bags],
        "label": [BRACS.fine[b.fine] for b in bags],
    }).to_csv(labels, index=False)  # fmt: skip
    splits = make_splits(read_labels(labels, BRACS), k=1, seed=0, val_frac=0.2, test_frac=0.2)
    write_splits(splits, root / "splits")
    return {"root": root, "uni": uni, "resnet": resnet, "labels": labels, "splits": root / "splits"}


def test_the_cohort_keeps_the_encoder_its_folder_names(trident: dict[str, Path]) -> None:
    labels = read_labels(trident["labels"], BRACS)
    split = make_splits(labels, k=1, seed=0, val_frac=0.2, test_frac=0.2)[0]
    cohort, _ = gather_fold(labels, split, trident["uni"], 1 << 20, verbose=False)
    assert cohort.encoder == EncoderRef("uni_v1") and cohort.in_dim == 8


def test_the_checkpoint_encoder_is_the_bags_unless_the_config_names_it() -> None:
    uni = EncoderRef("uni_v1", "ab12")
    assert checkpoint_encoder("", uni) == "uni_v1@ab12"
    assert checkpoint_encoder("", EncoderRef()) == ""
    assert checkpoint_encoder("hed-texture", EncoderRef()) == "hed-texture"
    assert checkpoint_encoder("uni_v1", uni) == "uni_v1@ab12"  # the bags' hash is added
    assert checkpoint_encoder("resnet50_trunc", EncoderRef("resnet50")) == "resnet50"
    with pytest.raises(ConfigError, match=r"data\.encoder: 'resnet50' is not the encoder the "
                       r"bags record \(uni_v1 \(weights ab12\)\)"):  # fmt: skip
        checkpoint_encoder("resnet50", uni)


def test_trident_bags_train_a_checkpoint_that_warns_on_another_encoder(
    trident: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    code = main(["train", "--labels", str(trident["labels"]), "--features", str(trident["uni"]),
                 "--splits", str(trident["splits"]), "--hierarchy", "bracs", "--out", str(run),
                 "--device", "cpu", "--epochs", "2", "--quiet", *SMALL])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    checkpoint = run / "fold_0" / "checkpoint.pt"
    _, info = load_checkpoint_file(checkpoint)
    assert info.encoder == "uni_v1"
    assert encoder_line(checkpoint).startswith("- Encoder: `uni_v1`, recorded in the checkpoint")
    capsys.readouterr()
    same, other = trident["uni"] / "synth-0000.pt", trident["resnet"] / "synth-0000.pt"
    assert same.is_file() and other.is_file()
    assert main(["predict", "--checkpoint", str(checkpoint), str(same), str(other)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"warning: {other}: bag made by resnet50 (named by its folder features_resnet50), but "
        "the checkpoint was trained on uni_v1 features: the prediction is not meaningful"
    ]
    png = tmp_path / "h.png"
    code = main(["heatmap", "--checkpoint", str(checkpoint), "--bag", str(other), "--level",
                 "fine", "--label", "IC", "--out", str(png), "--max-size", "64",
                 "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0 and png.is_file(), err
    assert f"warning: {other}: bag made by resnet50" in err and "uni_v1 features" in err
    assert "(patch 256px at level 0)" in err  # coords and size from patches/<id>_patches.h5
    # the viewer's slide page shows model_provenance's line for the bag it draws
    pred = hmil.load_checkpoint(checkpoint, device="cpu").predict(other)
    warning = model_provenance(checkpoint, info, pred.bag_attrs).encoder_mismatch
    assert warning is not None and "resnet50" in warning and "uni_v1" in warning


def test_a_configured_encoder_that_contradicts_the_bags_stops_training(
    trident: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--labels", str(trident["labels"]), "--features", str(trident["uni"]),
                 "--splits", str(trident["splits"]), "--hierarchy", "bracs", "--out",
                 str(tmp_path / "run"), "--device", "cpu", "--epochs", "1", "--quiet",
                 "--encoder", "conch_v15"])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0
    assert "error: --encoder: 'conch_v15' is not the encoder the bags record (uni_v1)" in err


def test_old_checkpoints_without_an_encoder_do_not_warn(trident: dict[str, Path]) -> None:
    from hmil.checkpoint import CheckpointInfo, save_checkpoint
    from hmil.config import ModelConfig
    from hmil.model import HMIL

    small = ModelConfig(hidden_dim=16, coarse_dim=16, fine_dim=8, coarse_attention_dim=8,
                        fine_attention_dim=8)  # fmt: skip
    info = CheckpointInfo(hierarchy=BRACS, in_dim=8, model_config=small)  # encoder ""
    path = save_checkpoint(trident["root"] / "old.pt", HMIL(8, 3, 7, small), info)
    pred = hmil.load_checkpoint(path, device="cpu").predict(trident["resnet"] / "synth-0000.pt")
    assert pred.warnings == [] and pred.bag_attrs is not None
    assert pred.bag_attrs["encoder"] == "resnet50"
    assert encoder_line(path).startswith("- Encoder: not recorded in the checkpoint")
