"""Pure viewer components on the fixture run: run tables, cohort tables, training helpers,
figures and the per-slide prediction."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from viewer_fixtures import NO_SLIDE_ID

from hmil.calibration import scale
from hmil.errors import ConfigError
from hmil.hierarchy import Hierarchy
from hmil.predict import Prediction, load_checkpoint
from viewer.core import charts, cohort, fold_table, launches, runs, train_form
from viewer.core.inference import (
    SlideCall,
    call_words,
    from_prediction,
    patch_attention_rows,
    predict_slide,
)
from viewer.core.paths import PathRefused


@pytest.fixture(scope="module")
def info(viewer_run: Path) -> runs.RunInfo:
    return runs.load_run_info(viewer_run)


@pytest.fixture(scope="module")
def predictions(viewer_run: Path) -> pd.DataFrame:
    return runs.load_predictions(viewer_run)


def test_discover_runs_finds_run_directories(viewer_root: Path, tmp_path: Path) -> None:
    assert viewer_root / "run" in runs.discover_runs([viewer_root])
    assert runs.discover_runs([viewer_root / "cohort"]) == []
    assert runs.discover_runs([tmp_path / "missing"]) == []


def test_predictions_of_all_folds_with_confidences(
    predictions: pd.DataFrame, info: runs.RunInfo
) -> None:
    assert sorted(predictions["fold"].unique()) == [0, 1]
    assert len(predictions) == 24  # k-fold: every slide is tested once
    row = predictions.iloc[0]
    assert row["confidence_fine"] == pytest.approx(row[f"p_fine_{row['pred_fine']}"], abs=1e-6)
    assert row["confidence_coarse"] == pytest.approx(row[f"p_coarse_{row['pred_coarse']}"])
    assert predictions["correct_fine"].dtype == bool
    assert info.hierarchy.name == "bracs" and info.folds == (0, 1)


def test_slide_table_and_file_lookup(info: runs.RunInfo, predictions: pd.DataFrame) -> None:
    table = runs.slide_table(info, predictions)
    assert len(table) == 24 and set(table["fold"]) == {0, 1}
    row = table.iloc[0]
    label = runs.slide_option_label(row)
    assert row["slide_id"] in label and f"true {row['true_fine']}" in label and "pred" in label
    folders = runs.cohort_dirs(info)
    assert runs.find_slide_file("synth-0000", folders).name == "synth-0000.tiff"
    assert runs.find_slide_file(NO_SLIDE_ID, folders) is None
    assert runs.find_lesion_mask("synth-0000", folders).name == "synth-0000_lesion.png"
    assert runs.find_bag_file(info, "synth-0000").suffix == ".h5"
    assert runs.is_synthetic(info)


def test_checkpoint_listing(viewer_run: Path, tmp_path: Path) -> None:
    ckpts = runs.run_checkpoints(viewer_run)
    assert sorted(ckpts) == [0, 1]
    extra = tmp_path / "checkpoints" / "demo"
    extra.mkdir(parents=True)
    shutil.copy(ckpts[0], extra / "checkpoint.pt")
    found = runs.list_checkpoints([viewer_run], [tmp_path / "checkpoints"])
    assert found[:2] == [ckpts[0], ckpts[1]] and found[2] == extra / "checkpoint.pt"


def test_metrics_table_matches_summary(viewer_run: Path) -> None:
    per_fold = runs.fold_test_metrics(viewer_run)
    table = cohort.metrics_table(per_fold)
    assert list(table["fold"]) == ["0", "1", "mean ± std"]
    summary = json.loads((viewer_run / "summary.json").read_text())
    bacc = summary["fine"]["balanced_accuracy"]
    assert table.iloc[-1]["fine bal. acc"] == f"{bacc['mean']:.3f} ± {bacc['std']:.3f}"
    assert table.iloc[0]["fine bal. acc"] == f"{per_fold[0]['fine']['balanced_accuracy']:.3f}"


def test_confusion_counts_and_filters(predictions: pd.DataFrame, info: runs.RunInfo) -> None:
    counts = cohort.confusion_counts(predictions, "fine", info.hierarchy.fine)
    assert counts.sum() == len(predictions)
    assert np.trace(counts) == int(predictions["correct_fine"].sum())
    wrong = cohort.filter_slides(
        predictions, cohort.SlideFilter(level="coarse", only_misclassified=True)
    )
    assert (wrong["true_coarse"] != wrong["pred_coarse"]).all()
    assert len(wrong) == int((~predictions["correct_coarse"]).sum())
    assert wrong["confidence_coarse"].is_monotonic_decreasing
    true_class = info.hierarchy.fine[0]
    some = cohort.filter_slides(predictions, cohort.SlideFilter(true_class=true_class, folds=(1,)))
    assert set(some["true_fine"]) <= {true_class} and set(some["fold"]) <= {1}
    none = cohort.filter_slides(predictions, cohort.SlideFilter(min_conf=0.99, max_conf=1.0))
    assert none.empty or (none["confidence_fine"] >= 0.99).all()


def test_roc_curves_and_cell_selection(predictions: pd.DataFrame, info: runs.RunInfo) -> None:
    curves = cohort.roc_curves(predictions, "coarse", info.hierarchy.coarse)
    assert set(curves) == set(info.hierarchy.coarse)
    for fpr, tpr, auc in curves.values():
        assert fpr[0] == 0 and tpr[-1] == 1 and 0 <= auc <= 1
    fig = charts.roc_figure(curves, "t")
    assert len(fig.data) == len(curves) + 1
    assert cohort.cell_from_selection({"selection": {"points": [{"x": "N", "y": "IC"}]}}) == (
        "IC",
        "N",
    )
    assert cohort.cell_from_selection({"selection": {"points": []}}) is None
    assert cohort.cell_from_selection(None) is None


def test_confusion_figure_is_clickable(info: runs.RunInfo) -> None:
    counts = np.arange(9).reshape(3, 3)
    fig = charts.confusion_figure(counts, info.hierarchy.coarse, "coarse")
    heat, points = fig.data
    assert heat.type == "heatmap" and points.type == "scatter"
    assert len(points.x) == 9 and list(points.customdata) == list(range(9))


def test_probability_rows_mark_prediction_and_truth() -> None:
    rows = charts.probability_rows(["a", "b", "c"], np.array([0.2, 0.7, 0.1]), "c")
    assert [(r.name, r.predicted, r.truth) for r in rows] == [
        ("a", False, False), ("b", True, False), ("c", False, True)
    ]  # fmt: skip
    assert rows[1].html().startswith('<div style="margin:0 0 0.55rem"><b>b</b> 0.70<div ')
    assert "c 0.10 · <b" in rows[2].html() and ">truth</b>" in rows[2].html()
    assert 'aria-valuenow="70.0"' in rows[1].html() and "width:70.0%" in rows[1].html()
    block = charts.probability_html([("fine", rows)])
    assert block.count('role="progressbar"') == 3 and "<b>fine</b>" in block
    # probabilities are clamped into the progress bar's [0, 1] (float round-off above 1)
    assert charts.probability_rows(["x"], np.array([1.0000001]), None)[0].probability == 1.0
    with pytest.raises(ValueError, match="2 class names but 3 probabilities"):
        charts.probability_rows(["a", "b"], np.array([0.1, 0.2, 0.7]), None)


def test_class_names_reach_html_and_markdown_escaped() -> None:
    (row,) = charts.probability_rows(['<img src=x onerror="y">'], np.array([1.0]), None)
    assert "<img" not in row.html() and "&lt;img src=x onerror=&quot;y&quot;&gt;" in row.html()
    assert "<script" not in charts.probability_html([("<script>", [row])])
    assert charts.escape_markdown("*[x](javascript:y)*") == r"\*\[x\]\(javascript\:y\)\*"


def test_prediction_and_patch_attention(viewer_run: Path, info: runs.RunInfo) -> None:
    predictor = load_checkpoint(viewer_run / "fold_0" / "checkpoint.pt", device="cpu")
    result = predict_slide(predictor, runs.find_bag_file(info, "synth-0001"))
    n = result.n_instances
    assert result.attention_coarse.shape == (3, n) and result.attention_fine.shape == (7, n)
    assert result.coarse_probs == pytest.approx(
        np.bincount(result.parent, weights=result.fine_probs, minlength=3)
    )
    assert result.patch_size == 128 and result.coords.shape == (n, 2)
    rows = patch_attention_rows(result, int(np.argmax(result.attention_fine[2])))
    assert [r["label"] for r in rows] == list(result.coarse) + list(result.fine)
    top = rows[len(result.coarse) + 2]
    assert top["percentile"] == pytest.approx(100.0)
    assert top["× average patch"] == pytest.approx(top["attention"] * n)


def test_the_slide_result_carries_the_calibration_and_the_call(
    viewer_run: Path, info: runs.RunInfo
) -> None:
    predictor = load_checkpoint(viewer_run / "fold_0" / "checkpoint.pt", device="cpu")
    cal = predictor.calibration
    result = predict_slide(predictor, runs.find_bag_file(info, "synth-0001"))
    assert result.calibrated and cal.fitted
    assert result.temperatures == (cal.fine_temperature, cal.coarse_temperature)
    raw = load_checkpoint(viewer_run / "fold_0" / "checkpoint.pt", device="cpu")
    raw.calibrated = False
    record = raw.predict(runs.find_bag_file(info, "synth-0001")).to_dict()
    assert record["probabilities"] == "raw"
    assert result.fine_probs == pytest.approx(
        scale(np.array([list(record["fine"]["probs"].values())]), cal.fine_temperature)[0],
        abs=1e-5,
    )
    assert result.call is not None and result.call.coverage_target == cal.coverage_target
    assert result.call.level == record["call"]["level"]
    assert result.call.sentence().startswith("Call at 90 % coverage: ")


def test_a_call_in_words() -> None:
    assert SlideCall("coarse", "atypical", 0.9).sentence() == (
        "Call at 90 % coverage: atypical — subtype uncertain"
    )
    assert SlideCall("fine", "ADH", 0.8).words() == "fine: ADH"
    assert SlideCall("none", None, 0.95).sentence() == "Call at 95 % coverage: no call"
    assert call_words("nan", None) == ""  # a table row without a call


def test_no_call_from_a_validation_part_too_small_says_so() -> None:
    # 7 validation slides: ⌈8 · 0.9⌉ = 8 > 7, so no threshold under 1 exists at 90 %
    note = SlideCall("none", None, 0.9, n_calibration=7).limit_note()
    assert note.startswith("the model's 7 validation slides cannot support a 90 % guarantee")
    assert "(at least 9 needed)" in note
    assert SlideCall("none", None, 0.9, n_calibration=9).limit_note() == ""
    assert SlideCall("none", None, 0.8, n_calibration=7).limit_note() == ""  # 4 suffice
    assert SlideCall("coarse", "atypical", 0.9, n_calibration=3).limit_note() == ""
    assert SlideCall("none", None, 0.9).limit_note() == ""  # size unknown: no claim


def test_training_curves_and_overview(viewer_run: Path) -> None:
    overview = fold_table.fold_overview(viewer_run)
    assert list(overview["fold"]) == [0, 1]
    assert set(overview["state"]) == {"finished"} and list(overview["epoch"]) == ["2/2", "2/2"]
    curves = fold_table.training_curves(viewer_run)
    assert set(curves["fold"]) == {0, 1} and set(curves["epoch"]) == {0, 1}
    assert {"train loss", "val loss", "val fine bal. acc"} <= set(curves["series"])
    fig = charts.curves_figure(curves, "t")
    assert len(fig.data) == curves.groupby(["fold", "series"]).ngroups


def test_stop_request(tmp_path: Path) -> None:
    path = launches.request_stop(tmp_path, 3)
    assert path == tmp_path / "fold_3" / "STOP" and path.is_file()


def test_training_form_paths_and_config(viewer_root: Path, tmp_path: Path) -> None:
    roots = (viewer_root.resolve(),)
    form = train_form.TrainForm(
        out=str(viewer_root / "runs" / "new"),
        labels=str(viewer_root / "cohort" / "labels.csv"),
        features=str(viewer_root / "cohort" / "features"),
        splits=str(viewer_root / "splits"),
        hierarchy="bracs",
        folds=[1],
        overrides={"train.epochs": 3, "launcher.kind": "local"},
        extra_yaml="model:\n  hidden_dim: 8\n",
    )
    paths = train_form.checked_paths(form, roots)
    config = train_form.build_config(form, paths)
    assert config.train.epochs == 3 and config.model.hidden_dim == 8
    assert config.data.folds == "1" and config.launcher.kind == "local"
    assert config.data.labels == str((viewer_root / "cohort" / "labels.csv").resolve())
    with pytest.raises(PathRefused):
        train_form.checked_paths(
            train_form.TrainForm(**{**form.__dict__, "labels": "/etc/passwd"}), roots
        )
    with pytest.raises(PathRefused):
        train_form.checked_paths(
            train_form.TrainForm(**{**form.__dict__, "out": str(tmp_path)}), roots
        )
    bad = train_form.TrainForm(**{**form.__dict__, "extra_yaml": "model: [1"})
    with pytest.raises(ConfigError, match="cannot parse YAML"):
        train_form.build_config(bad, paths)
    unknown = train_form.TrainForm(**{**form.__dict__, "extra_yaml": "model:\n  nope: 1\n"})
    with pytest.raises(ConfigError, match="nope"):
        train_form.build_config(unknown, paths)


def test_create_splits_and_available_folds(viewer_root: Path, tmp_path: Path) -> None:
    written = train_form.create_splits(
        viewer_root / "cohort" / "labels.csv", "bracs", tmp_path / "s", 3, 0, 0.1, None
    )
    assert [p.name for p in written] == ["splits_0.csv", "splits_1.csv", "splits_2.csv"]
    assert train_form.available_folds(tmp_path / "s") == [0, 1, 2]
    assert train_form.available_folds(tmp_path / "missing") == []


def test_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_bytes(b"a\rb\r" + b"\n".join(b"line %d" % i for i in range(100)))
    tail = launches.log_tail(log)
    assert tail.splitlines()[-1] == "line 99" and len(tail.splitlines()) == 30
    assert launches.log_tail(tmp_path / "missing.log") == ""


def test_run_files_outside_the_roots_are_not_read(viewer_run: Path, tmp_path: Path) -> None:
    """A run found under a root may name data elsewhere: that data is not read."""
    import yaml

    root = tmp_path / "root"
    copy = root / "run"
    shutil.copytree(viewer_run, copy)
    roots = (root.resolve(),)
    info = runs.load_run_info(copy, roots)  # preset hierarchy: nothing to check
    table = runs.slide_table(info, runs.load_predictions(copy), roots)
    assert len(table) == 24 and (table["fold"] >= 0).all()  # from predictions.csv only
    config = yaml.safe_load((copy / "config.yaml").read_text())
    outside = tmp_path / "elsewhere" / "tree.yaml"
    outside.parent.mkdir()
    outside.write_text(yaml.safe_dump(info.hierarchy.to_dict(), sort_keys=False))
    config["data"]["hierarchy"] = str(outside)
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(PathRefused):
        runs.load_run_info(copy, roots)
    assert runs.load_run_info(copy).hierarchy.fine == info.hierarchy.fine  # no roots: read


def test_warm_up_imports_the_listed_modules_and_reports_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from viewer import warmup

    assert "torch" in warmup.MODULES and "hmil.predict" in warmup.MODULES
    failed = warmup.warm_imports(("json", "hmil_no_such_module", "json:dumps", "json:no_such"))
    assert failed == ["hmil_no_such_module", "json:no_such"]
    # scikit-image's submodules load on attribute access: the warm-up reads the attributes
    assert "skimage.measure:find_contours" in warmup.MODULES
    assert "warm-up: cannot import hmil_no_such_module" in caplog.text


def test_warm_up_renders_a_page_once_and_reports_what_it_showed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from streamlit.runtime import Runtime

    from viewer import warmup

    good = tmp_path / "good.py"
    good.write_text("import streamlit as st\nst.title('hello')\n")
    assert warmup.render_page(good) == []
    bad = tmp_path / "bad.py"
    bad.write_text("raise ValueError('no run here')\n")
    assert warmup.render_page(bad) == ["no run here"]
    assert "warm-up: the first page run showed: no run here" in caplog.text
    assert warmup.render_page(tmp_path / "missing.py")  # the harness's own error, not raised
    assert not Runtime.exists()  # the harness put Streamlit's runtime singleton back
    assert warmup.prepare(good, render=True) >= 0.0


def test_caches_reload_a_rewritten_file(tmp_path: Path) -> None:
    """The file signature is part of the cache key: a mask or slide rewritten in place is
    read again, not served from the cache (a signature named ``_sig`` would be ignored)."""
    from PIL import Image

    from viewer.components import cached_ui

    mask = tmp_path / "mask.png"
    Image.new("L", (4, 3), 0).save(mask)
    assert cached_ui.mask(mask).shape == (3, 4) and not cached_ui.mask(mask).any()
    Image.new("L", (6, 5), 255).save(mask)
    assert cached_ui.mask(mask).shape == (5, 6) and cached_ui.mask(mask).all()

    slide = tmp_path / "slide.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(slide)
    first = cached_ui.slide_crop(slide, 0, 0, 32, 8)
    assert first.shape == (8, 8, 3) and tuple(first[4, 4]) == (200, 10, 10)
    Image.new("RGB", (80, 80), (10, 10, 200)).save(slide)
    assert tuple(cached_ui.slide_crop(slide, 0, 0, 32, 8)[4, 4]) == (10, 10, 200)


def test_patch_bars_show_multiples_of_an_average_patch_on_a_log_axis() -> None:
    from viewer.core.patch_bars import bar_share, patch_bars_html

    assert bar_share(1.0) == pytest.approx(1 / 3)  # ×1 sits a third along ×0.1–×100
    assert (bar_share(0.05), bar_share(100.0), bar_share(1e6)) == (0.0, 1.0, 1.0)
    rows = [
        {"level": "fine", "label": "<b>IC</b>", "x": 0.001},
        {"level": "fine", "label": "DCIS", "x": 12.3},
    ]
    html = patch_bars_html(rows, "x", "fine/DCIS")
    assert "&lt;b&gt;IC&lt;/b&gt;" in html and "<b>IC</b>" not in html  # names escaped
    assert "<b>DCIS</b>" in html and "×12.3" in html and "<×0.01" in html
    assert html.count("width:1px") == 2  # the ×1 tick on every bar


def test_the_coarse_prediction_is_read_from_the_raw_probabilities() -> None:
    # raw fine p = (0.26, 0.26, 0.48) → coarse x; the T = 0.5 probabilities shown say y
    hierarchy = Hierarchy(name="t", coarse=("x", "y"), fine=("a", "b", "c"), parent=(0, 0, 1))
    raw = np.array([0.26, 0.26, 0.48])
    pred = Prediction(
        slide_id="s", n_instances=3, hierarchy=hierarchy, fine_probs=raw**2 / (raw**2).sum(),
        coarse_head_probs=np.array([0.5, 0.5]), calibrated=True, raw_fine_probs=raw,
        attention={"coarse": np.full((2, 3), 1 / 3), "fine": np.full((3, 3), 1 / 3)},
    )  # fmt: skip
    result = from_prediction(pred)
    assert result.coarse_probs[1] > 0.6 and result.coarse_pred == "x"
    np.testing.assert_allclose(result.raw_coarse_probs, [0.52, 0.48])
    assert not result.consistent  # fine c under y, coarse decision x: flagged, as in the record
