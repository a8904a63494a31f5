import numpy as np
import pandas as pd
import pytest

from hmil.data.labels import read_labels
from hmil.data.splits import (
    Split,
    check_cases,
    list_split_files,
    make_splits,
    read_split,
    write_splits,
)
from hmil.errors import LabelError, SplitError
from hmil.hierarchy import Hierarchy

BRACS = Hierarchy.preset("bracs")


def _labels(tmp_path, n=84, per_case=2, seed=0):
    rng = np.random.default_rng(seed)
    fine = rng.permutation(np.arange(n) % 7)
    df = pd.DataFrame(
        {
            "slide_id": [f"s{i:03d}" for i in range(n)],
            "case_id": [f"c{i // per_case:03d}" for i in range(n)],
            "label": [BRACS.fine[j] for j in fine],
        }
    )
    # give each case one label so stratification by slide and grouping agree
    df["label"] = df.groupby("case_id")["label"].transform("first")
    path = tmp_path / "labels.csv"
    df.to_csv(path, index=False)
    return read_labels(path, BRACS)


def test_label_table_derives_coarse(tmp_path):
    labels = _labels(tmp_path)
    row = labels.iloc[0]
    assert row["coarse"] == BRACS.parent_of(row["label"])
    assert labels["fine_idx"].between(0, 6).all()


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("slide_id,label\na,N\nb,XYZ\n", "row 3: label 'XYZ' of slide 'b' is not a fine class"),
        ("slide_id,label\na,N\nb,\n", "row 3: slide 'b' has an empty label"),
        ("slide_id,label\na,N\na,PB\n", "duplicate slide_id"),
        ("slide,label\na,N\n", "missing column"),
        ("slide_id,label\n", "no rows"),
    ],
)
def test_bad_label_tables(tmp_path, csv, message):
    path = tmp_path / "l.csv"
    path.write_text(csv)
    with pytest.raises(LabelError, match=message) as info:
        read_labels(path, BRACS)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("test_frac", [None, 0.2])
def test_splits_group_stratify_and_are_deterministic(tmp_path, test_frac):
    labels = _labels(tmp_path)
    a = make_splits(labels, k=5, seed=3, val_frac=0.1, test_frac=test_frac)
    b = make_splits(labels, k=5, seed=3, val_frac=0.1, test_frac=test_frac)
    c = make_splits(labels, k=5, seed=4, val_frac=0.1, test_frac=test_frac)
    assert a == b and a != c
    case_of = dict(zip(labels["slide_id"], labels["case_id"], strict=True))
    label_of = dict(zip(labels["slide_id"], labels["fine_idx"], strict=True))
    for split in a:
        parts = split.parts()
        assert sum(len(v) for v in parts.values()) == len(labels)
        cases = {name: {case_of[s] for s in ids} for name, ids in parts.items()}
        assert not cases["train"] & cases["test"]
        assert not cases["train"] & cases["val"]
        assert not cases["val"] & cases["test"]
        # stratified: each class's share of the test set is within one case (2 slides) of
        # its share of the cohort
        test_counts = np.bincount([label_of[s] for s in split.test], minlength=7)
        expected = np.bincount(labels["fine_idx"], minlength=7) * len(split.test) / len(labels)
        assert np.abs(test_counts - expected).max() <= 2.0
        assert 0.05 < len(split.val) / len(labels) < 0.2
    if test_frac is None:  # k-fold: test sets partition the cohort
        tested = [s for split in a for s in split.test]
        assert sorted(tested) == sorted(labels["slide_id"])


def test_split_files_round_trip_in_clam_layout(tmp_path):
    labels = _labels(tmp_path)
    splits = make_splits(labels, k=3, seed=0)
    paths = write_splits(splits, tmp_path / "splits")
    header = paths[0].read_text().splitlines()[0]
    assert header == ",train,val,test"
    assert list(list_split_files(tmp_path / "splits")) == [0, 1, 2]
    assert read_split(paths[1], set(labels["slide_id"])) == splits[1]


def test_split_naming_an_unlabelled_slide_is_an_error(tmp_path):
    path = tmp_path / "splits_0.csv"
    path.write_text(",train,val,test\n0,a,b,c\n1,ghost,,\n")
    with pytest.raises(SplitError, match="train slide 'ghost' has no row in the label table"):
        read_split(path, {"a", "b", "c"})
    path.write_text(",train,val,test\n0,a,a,c\n")
    with pytest.raises(SplitError, match="both train and val"):
        read_split(path)


def test_too_many_folds_is_a_clear_error(tmp_path):
    labels = _labels(tmp_path, n=14, per_case=1)
    with pytest.raises(SplitError, match="5 folds need"):
        make_splits(labels, k=5)


def _split_csv(path, train, test):
    rows = [",train,val,test"]
    for i in range(max(len(train), len(test))):
        t = train[i] if i < len(train) else ""
        s = test[i] if i < len(test) else ""
        rows.append(f"{i},{t},,{s}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_slide_listed_twice_in_one_part_is_an_error(tmp_path):
    """Before: accepted, the slide then counted twice in training."""
    p = _split_csv(tmp_path / "splits_0.csv", ["a", "b", "a"], ["c"])
    with pytest.raises(SplitError, match="slide 'a' is listed twice in train"):
        read_split(p)


def test_a_case_in_two_parts_is_an_error(tmp_path):
    """Two slides of one patient, one in train and one in test (before: accepted)."""
    p = _split_csv(tmp_path / "splits_0.csv", ["a1", "b"], ["a2", "c"])
    cases = {"a1": "A", "a2": "A", "b": "B", "c": "C"}
    with pytest.raises(
        SplitError, match=r"splits_0.csv: case 'A' has slides in both train \(a1\) and test \(a2\)"
    ):
        read_split(p, cases=cases)
    assert read_split(p, cases={}).test == ("a2", "c")  # each slide its own case: fine
    split = read_split(p)
    with pytest.raises(SplitError, match="case 'A'"):
        check_cases(split, cases)
    # evaluation passes the test slides as "train" as well: the same slides, not a leak
    check_cases(Split(train=split.test, val=(), test=split.test), cases)


def test_a_tiny_cohort_asked_for_validation_gets_at_least_one_slide(tmp_path):
    # 12 slides over 7 classes at 15 %: every class quota rounds to nothing, yet asking for a
    # validation set must give one (training on a fold without it has nothing to select on)
    labels = _labels(tmp_path, n=12, per_case=1)
    for split in make_splits(labels, k=2, seed=0, val_frac=0.15):
        assert len(split.val) >= 1
        assert len(split.train) >= 1
        assert not set(split.val) & set(split.train)
    assert all(len(s.val) == 0 for s in make_splits(labels, k=2, seed=0, val_frac=0.0))


def test_label_table_header_problems_are_one_clear_error(tmp_path):
    dup = tmp_path / "dup.csv"
    dup.write_text("label,slide_id,slide_id\nIC,s1,s2\n")
    with pytest.raises(LabelError, match="duplicate column"):
        read_labels(dup, BRACS)
    long_row = tmp_path / "long.csv"
    long_row.write_text("slide_id,label\ns1,IC,extra\n")
    with pytest.raises(LabelError, match="cannot parse CSV"):
        read_labels(long_row, BRACS)
    trailing = tmp_path / "trailing.csv"  # a spreadsheet export with empty trailing columns
    trailing.write_text("slide_id,label,,\ns1,IC,,\ns2,N,,\n")
    assert list(read_labels(trailing, BRACS)["slide_id"]) == ["s1", "s2"]
