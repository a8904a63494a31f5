"""Encoders named by TRIDENT's folders, the checkpoint's ``name@sha`` label, and the one-line
mismatch warning naming both encoders (SYNTHETIC features)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hmil.data.bags import save_bag
from hmil.data.provenance import (
    EncoderRef,
    check_single_encoder,
    encoder_mismatch,
    parse_encoder,
    read_bag_encoder,
)

X = np.ones((4, 3), np.float32)


def test_h5_and_pt_bags_in_trident_folders_take_the_folder_encoder(tmp_path: Path) -> None:
    uni = tmp_path / "features_uni_v1"
    save_bag(uni / "a.h5", X)  # no encoder attribute
    torch.save(X, uni / "b.pt")  # TRIDENT saveas="pt"
    save_bag(uni / "c.h5", X, attrs={"encoder": "conch_v15"})  # recorded: wins
    assert read_bag_encoder(uni / "a.h5") == EncoderRef("uni_v1")
    assert read_bag_encoder(uni / "b.pt") == EncoderRef("uni_v1")
    assert read_bag_encoder(uni / "c.h5") == EncoderRef("conch_v15")
    assert check_single_encoder([uni / "a.h5", uni / "b.pt"]) == EncoderRef("uni_v1")
    # CLAM's alias in a folder name reads as TRIDENT's name
    save_bag(tmp_path / "features_resnet50_trunc" / "d.h5", X)
    assert read_bag_encoder(tmp_path / "features_resnet50_trunc" / "d.h5") == EncoderRef("resnet50")


def test_the_checkpoint_label_round_trips() -> None:
    for ref in (EncoderRef("uni_v1", "ab12cd"), EncoderRef("resnet50"), EncoderRef()):
        assert parse_encoder(ref.label()) == ref
    assert EncoderRef("uni_v1", "ab12").label() == "uni_v1@ab12"
    assert EncoderRef().label() == ""


def test_the_warning_names_both_encoders_and_the_folder() -> None:
    attrs = {"encoder": "resnet50", "encoder_from_folder": "features_resnet50"}
    assert encoder_mismatch("uni_v1@ab12", attrs) == (
        "bag made by resnet50 (named by its folder features_resnet50), but the checkpoint was "
        "trained on uni_v1 (weights ab12) features: the prediction is not meaningful"
    )
    assert encoder_mismatch("uni_v1", {"encoder": "uni_v1", "encoder_from_folder": "x"}) is None
    assert encoder_mismatch("", attrs) is None  # an old checkpoint records none: silent
