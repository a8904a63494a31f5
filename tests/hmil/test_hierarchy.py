import json

import numpy as np
import pytest

from hmil.errors import HierarchyError
from hmil.hierarchy import Hierarchy


def test_bracs_preset_mapping_and_parents():
    h = Hierarchy.preset("bracs")
    assert h.coarse == ("benign", "atypical", "malignant")
    assert h.fine == ("N", "PB", "UDH", "FEA", "ADH", "DCIS", "IC")
    assert h.mapping.shape == (7, 3)
    np.testing.assert_array_equal(h.mapping.sum(axis=1), np.ones(7))
    np.testing.assert_array_equal(h.mapping.sum(axis=0), [3, 2, 2])
    assert h.parent_of("ADH") == "atypical"
    assert h.children(2) == [5, 6]


def test_panda_and_ccc_presets():
    panda = Hierarchy.preset("panda")
    assert panda.fine == ("0", "1", "2", "3", "4", "5")
    assert [panda.parent_of(g) for g in panda.fine] == ["benign", "low", "low"] + ["high"] * 3
    ccc = Hierarchy.preset("ccc")
    assert (ccc.n_coarse, ccc.n_fine) == (2, 6)
    assert ccc.parent_of("NILM") == "NILM"  # a name may appear on both levels


def test_yaml_and_json_files_round_trip(tmp_path):
    data = {"name": "t", "coarse": ["b", "m"], "fine": {"n": "b", "a": "b", "c": "m"}}
    yaml_path = tmp_path / "t.yaml"
    yaml_path.write_text("name: t\ncoarse: [b, m]\nfine:\n  n: b\n  a: b\n  c: m\n")
    json_path = tmp_path / "t.json"
    json_path.write_text(json.dumps(data))
    for path in (yaml_path, json_path):
        h = Hierarchy.from_file(path)
        assert h.fine == ("n", "a", "c") and h.parent == (0, 0, 1)
        assert h.to_dict() == data
    assert Hierarchy.resolve(str(yaml_path)).same_as(Hierarchy.from_dict(data))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"coarse": ["b"], "fine": {"x": "b", "y": None}}, "fine class 'y' has no parent"),
        ({"coarse": ["b"], "fine": {"x": "b", "y": "zzz"}}, "unknown parent 'zzz'"),
        ({"coarse": ["b"], "fine": {"x": "y", "y": "x"}}, "itself a fine class"),
        ({"coarse": ["b", "b"], "fine": {"x": "b", "y": "b"}}, "duplicate coarse"),
        ({"coarse": ["b", "m"], "fine": {"x": "b", "y": "b"}}, "without any fine class: m"),
        ({"coarse": ["b"], "fine": {"x": "b", "y": "b"}, "extra": 1}, "unknown key"),
    ],
)
def test_invalid_hierarchies_name_the_problem(data, message):
    with pytest.raises(HierarchyError, match=message):
        Hierarchy.from_dict(data, source="my.yaml")


def test_missing_file_and_unknown_preset():
    with pytest.raises(HierarchyError, match="not found"):
        Hierarchy.from_file("/nonexistent/tree.yaml")
    with pytest.raises(HierarchyError, match="unknown hierarchy preset"):
        Hierarchy.resolve("nope")
