"""hmil.yamlsafe and every YAML reader that uses it (configs, hierarchies): what is refused, what
is typed how, and properties over generated documents."""

from __future__ import annotations

import math
import resource
import string
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hmil import yamlsafe
from hmil.config import Config
from hmil.errors import ConfigError, HierarchyError
from hmil.hierarchy import Hierarchy
from hmil.train.api import config_from_yaml_text
from hmil.yamlsafe import YAMLRefused

#: 358 bytes whose aliases expand to 9⁸ ≈ 43 million list items once copied
BOMB = (
    "launcher:\n  extra:\n"
    '    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(
        f"    {n}: &{n} [{','.join(['*' + p] * 9)}]\n"
        for p, n in zip("abcdefg", "bcdefgh", strict=True)
    )
)
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_yaml_bomb_is_refused_at_once_by_every_config_reader(tmp_path: Path) -> None:
    assert len(BOMB.encode()) == 358
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    before, start = _peak_rss_mb(), time.perf_counter()
    with pytest.raises(ConfigError, match=r"anchors \(&a\) are not allowed \(line 3"):
        Config.from_file(path)
    with pytest.raises(YAMLRefused, match="anchors"):
        config_from_yaml_text(BOMB)
    assert time.perf_counter() - start < 1.0
    assert _peak_rss_mb() - before < 50  # before the fix: 1.2 GB and 128 s in the viewer


def test_aliases_and_anchors_are_refused_anywhere() -> None:
    with pytest.raises(YAMLRefused, match=r"anchors \(&x\)"):
        yamlsafe.load("a: &x 1\n")
    with pytest.raises(YAMLRefused, match=r"aliases \(\*x\)"):
        yamlsafe.load("a: *x\n")  # an alias without anchor is a parse error in PyYAML too
    with pytest.raises(YAMLRefused, match="anchors"):
        yamlsafe.load("coarse: &c [a]\nfine: {x: a}\n", strings_only=True)


def test_duplicate_keys_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(YAMLRefused, match=r"duplicate key 'epochs' \(line 3, column 3\)"):
        yamlsafe.load("train:\n  epochs: 3\n  epochs: 5\n")
    tree = tmp_path / "tree.yaml"
    tree.write_text(
        "coarse: [benign, malignant]\nfine:\n"
        "  N: benign\n  PB: benign\n  IC: malignant\n  N: malignant\n"
    )
    # before: N silently moved from benign to malignant
    with pytest.raises(HierarchyError, match=r"tree.yaml: cannot parse .*duplicate key 'N'"):
        Hierarchy.from_file(tree)
    js = tmp_path / "tree.json"
    js.write_text('{"coarse": ["a", "b"], "fine": {"x": "a", "y": "b", "x": "b"}}')
    with pytest.raises(HierarchyError, match="duplicate key 'x'"):
        Hierarchy.from_file(js)


def test_yaml_1_2_scalars_booleans_only_true_false() -> None:
    data = yamlsafe.load(
        "a: yes\nb: no\nc: on\nd: off\ne: true\nf: FALSE\ng: 012\nh: 0x1F\ni: 0o17\nj: 1e-4\n"
        "k: .inf\nl: 1:20\nm: 2002-12-14\nn: ~\no:\np: -.5\n"
    )
    assert data == {
        "a": "yes", "b": "no", "c": "on", "d": "off", "e": True, "f": False, "g": 12, "h": 31,
        "i": 15, "j": 1e-4, "k": math.inf, "l": "1:20", "m": "2002-12-14", "n": None, "o": None,
        "p": -0.5,
    }  # fmt: skip


def test_config_booleans_still_work_and_yes_is_a_clear_error(tmp_path: Path) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_text("loss:\n  inst_align:\n    enabled: false\ntrain:\n  lr: 1e-4\n  amp: true\n")
    config = Config.from_file(ok)
    assert config.loss.inst_align.enabled is False and config.train.lr == 1e-4
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss:\n  inst_align:\n    enabled: no\n")
    with pytest.raises(ConfigError, match=r"'loss\.inst_align\.enabled' must be true or false"):
        Config.from_file(bad)


def test_label_names_yes_no_on_012_stay_strings(tmp_path: Path) -> None:
    tree = tmp_path / "yn.yaml"
    tree.write_text(
        "coarse: [benign, malignant]\nfine:\n"
        "  no: benign\n  on: benign\n  yes: malignant\n  012: malignant\n"
    )
    h = Hierarchy.from_file(tree)
    assert h.fine == ("no", "on", "yes", "012")  # before: ('False', 'True', ...) and '10'
    assert h.parent_of("yes") == "malignant"


def test_size_depth_and_tags_are_limited(tmp_path: Path) -> None:
    with pytest.raises(YAMLRefused, match="exceeds the 100-byte limit"):
        yamlsafe.load("a: " + "x" * 200, max_bytes=100)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: 1\n" * (yamlsafe.MAX_YAML_BYTES // 5 + 1))
    with pytest.raises(ConfigError, match="larger than the 1048576-byte limit"):
        Config.from_file(big)
    deep = "[" * 40 + "]" * 40
    with pytest.raises(YAMLRefused, match="nested deeper than 32 levels"):
        yamlsafe.load(deep)
    assert yamlsafe.load("[" * 10 + "]" * 10) == [[[[[[[[[[]]]]]]]]]]
    for text in ("a: !!python/object:os.system x", "a: !!binary aGk=", "a: !!set {x}"):
        with pytest.raises(YAMLRefused, match="is not allowed"):
            yamlsafe.load(text)


def test_parse_errors_are_one_line_with_a_position() -> None:
    with pytest.raises(YAMLRefused) as info:
        yamlsafe.load("model: [1")
    assert "\n" not in str(info.value) and "(line 1, column" in str(info.value)
    with pytest.raises(YAMLRefused, match="another document"):
        yamlsafe.load("a: 1\n---\nb: 2\n")


# ----------------------------------------------------------------------------- properties

_names = st.text(min_size=1, max_size=12)
_words = st.text(string.ascii_letters, min_size=1, max_size=10)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, width=64)
    | _words
)
_documents = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_words, inner, max_size=4),
    max_leaves=20,
)


@SETTINGS
@given(text=st.text(max_size=300))
def test_any_text_parses_or_is_refused_in_one_line(text: str) -> None:
    for strings_only in (False, True):
        try:
            yamlsafe.load(text, strings_only=strings_only)
        except YAMLRefused as exc:
            assert "\n" not in str(exc)


@SETTINGS
@given(doc=_documents)
def test_typed_documents_round_trip_through_safe_dump(doc: object) -> None:
    assert yamlsafe.load(yaml.safe_dump(doc)) == doc


@SETTINGS
@given(doc=st.dictionaries(_words, _documents, min_size=1, max_size=4), anchor=_words)
def test_any_anchor_is_refused(doc: dict, anchor: str) -> None:
    text = yaml.safe_dump(doc) + f"zz_extra: &{anchor} [1]\nzz_again: *{anchor}\n"
    with pytest.raises(YAMLRefused, match="anchors"):
        yamlsafe.load(text)


@SETTINGS
@given(doc=st.dictionaries(_words, _scalars, min_size=1, max_size=5), data=st.data())
def test_any_repeated_key_is_refused(doc: dict, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(doc)))
    text = yaml.safe_dump(doc) + yaml.safe_dump({key: 1})
    with pytest.raises(YAMLRefused, match="duplicate key"):
        yamlsafe.load(text)


@SETTINGS
@given(
    coarse=st.lists(_names, min_size=1, max_size=3, unique=True),
    fine=st.lists(_names, min_size=2, max_size=6, unique=True),
    data=st.data(),
)
def test_hierarchy_names_survive_any_spelling(coarse, fine, data) -> None:
    """Whatever the class names (``no``, ``012``, ``null``, unicode), a hierarchy file written
    with yaml.safe_dump loads back with exactly those names and parents."""
    parents = [coarse[i % len(coarse)] for i in range(len(fine))]
    parents = data.draw(st.permutations(parents))
    if set(parents) != set(coarse) or set(coarse) & set(fine):
        return  # every coarse class needs a child; names of the two levels must differ
    tree = {"name": "t", "coarse": coarse, "fine": dict(zip(fine, parents, strict=True))}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tree.yaml"
        path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
        h = Hierarchy.from_file(path)
    assert h.coarse == tuple(coarse) and h.fine == tuple(fine)
    assert [h.parent_of(f) for f in fine] == parents
