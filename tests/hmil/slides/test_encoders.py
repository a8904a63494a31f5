"""The named encoders are generated from the spec table: one registered class per row."""

from __future__ import annotations

from hmil.slides.encoder_specs import SPECS, UNI_V1
from hmil.slides.encoders import (
    ENCODERS,
    PRETRAINED,
    PretrainedEncoder,
    encoder_table,
    pretrained_class,
)


def test_every_row_of_the_table_is_registered_under_its_name_and_aliases() -> None:
    assert [cls.spec for cls in PRETRAINED] == list(SPECS)
    for spec in SPECS:
        cls = ENCODERS[spec.name]
        assert issubclass(cls, PretrainedEncoder) and cls.spec is spec
        assert cls.name == spec.name and cls.aliases == spec.aliases
        assert cls.__doc__ == spec.summary and spec.summary.endswith(f"D = {spec.dim}.")
        for alias in spec.aliases:
            assert ENCODERS[alias] is cls
    assert ENCODERS["resnet50"] is ENCODERS["resnet50_trunc"]
    # registry order: the two built-in encoders, then the table's rows with their aliases
    assert list(ENCODERS)[:4] == ["hed-texture", "torchscript", "resnet50_trunc", "resnet50"]


def test_class_names_and_list_rows_follow_the_table() -> None:
    assert [cls.__name__ for cls in PRETRAINED] == [
        "Resnet50TruncEncoder", "UniV1Encoder", "UniV2Encoder", "ConchV15Encoder",
        "Virchow2Encoder", "GigapathEncoder", "Hoptimus0Encoder",
    ]  # fmt: skip
    rows = {row.name: row for row in encoder_table()}
    assert rows["resnet50_trunc | resnet50"].dim == "1024"
    assert rows["virchow2"].dim == "2560" and rows["conch_v15"].dim == "768"
    assert len(rows) == 2 + len(SPECS)


def test_a_generated_class_is_a_fresh_unregistered_subclass() -> None:
    cls = pretrained_class(UNI_V1)
    assert cls is not ENCODERS["uni_v1"] and ENCODERS["uni_v1"].__module__ == cls.__module__
    assert cls.spec is UNI_V1 and cls.__name__ == "UniV1Encoder"
