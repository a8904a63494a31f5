"""The app through ``streamlit.testing.v1.AppTest``: every page, driven by its widgets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from viewer_fixtures import APP, NO_SLIDE_ID
from viewer_fixtures import APP_TIMEOUT as TIMEOUT

from viewer.tiles.registry import shared_registry

pytestmark = pytest.mark.usefixtures("app_env")


def _start(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if page is not None:
        at.switch_page(page)
    at.run()
    _no_errors(at)
    return at


def _no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _images(at: AppTest) -> list[str]:
    """Captions of the ``st.image`` elements shown."""
    return [caption for image in at.get("image") for caption in image.proto.imgs and
            [i.caption for i in image.proto.imgs]]  # fmt: skip


def _frame(at: AppTest, column: str, nth: int = 0):
    """The ``nth`` dataframe shown that has ``column`` (AppTest does not keep dataframe keys)."""
    frames = [d.value for d in at.dataframe if column in d.value.columns]
    return frames[nth]


def _main_caption(at: AppTest) -> str:
    return next(c.value for c in at.caption if "attention over" in c.value)


def _view(at: AppTest) -> dict:
    """The data the deep-zoom component got (what the browser draws)."""
    (element,) = at.get("bidi_component")
    assert element.proto.component_name == "hmil_deepzoom"
    return json.loads(element.proto.json or element.proto.mixed.json)


def test_slide_page_shows_prediction_overlay_and_banner(viewer_root: Path) -> None:
    at = _start()
    assert at.title[0].value == "Slide"
    assert any("SYNTHETIC data" in w.value for w in at.warning)
    assert at.selectbox(key="slide_pick").value == "synth-0000"
    assert at.selectbox(key="slide_fold").value in (0, 1)
    assert not at.get("plotly_chart")  # the bars are one HTML block (light in the browser)
    (bars,) = [m.value for m in at.markdown if "hmil-probabilities" in m.value]
    assert bars.count('role="progressbar"') == 3 + 3 + 7  # coarse (Mᵀ p_f), coarse head, fine
    assert bars.count("<b>") == 3 + 3  # the titles, and one prediction in bold per level
    assert bars.count(">truth</b>") == 3  # the truth in each
    caption = _main_caption(at)
    assert caption.startswith("fine · ") and "over the slide" in caption and "0.5 µm/px" in caption
    assert sum(c.startswith("#") for c in _images(at)) == 8  # top-k gallery
    assert "Prediction:" in " ".join(m.value for m in at.markdown)
    view = _view(at)
    label = at.selectbox(key="ov_label").value
    assert view["show"]["level"] == "fine" and view["show"]["label"] == label
    assert caption.startswith(f"fine · {label} — ")
    assert view["show"]["outline"], "the ground-truth lesion outline is drawn on the view"
    assert view["slide"]["mpp"] == 0.5 and view["layer"]["strategy"] == "canvas"
    # the tile routes serve exactly the slide the page shows, under an opaque key
    key = view["slide"]["dzi"].split("/")[-1].removesuffix(".dzi")
    expected = viewer_root / "cohort" / "slides" / "synth-0000.tiff"
    assert shared_registry().slide_path(key) == expected.resolve()
    assert str(expected) not in json.dumps(view)  # no path reaches the browser


def test_switching_level_and_label_changes_the_overlay() -> None:
    at = _start()
    before = _view(at)
    at.radio(key="ov_level").set_value("coarse").run()
    _no_errors(at)
    assert at.selectbox(key="ov_label").options == ["benign", "atypical", "malignant"]
    at.selectbox(key="ov_label").set_value("malignant").run()
    assert _main_caption(at).startswith("coarse · malignant")
    assert at.subheader[-1].value == "Top patches · coarse · malignant"
    after = _view(at)
    assert (after["show"]["level"], after["show"]["label"]) == ("coarse", "malignant")
    assert after["slide"] == before["slide"] and after["layer"] == before["layer"]  # no reload
    at.radio(key="ov_level").set_value("fine").run()
    at.selectbox(key="ov_label").set_value("DCIS").run()
    assert _main_caption(at).startswith("fine · DCIS")


def test_all_labels_of_a_level_as_small_multiples() -> None:
    at = _start()
    at.radio(key="ov_mode").set_value("all").run()
    _no_errors(at)
    assert _main_caption(at).startswith("all fine labels")
    view = _view(at)
    assert view["show"]["mode"] == "all"
    assert view["layer"]["names"]["fine"] == ["N", "PB", "UDH", "FEA", "ADH", "DCIS", "IC"]
    at.radio(key="ov_level").set_value("coarse").run()
    assert _main_caption(at).startswith("all coarse labels")


def test_style_controls_change_the_layer_bytes_only_when_needed() -> None:
    at = _start()
    first = _view(at)["layer"]
    at.slider(key="ov_alpha").set_value(0.8)
    at.selectbox(key="ov_cmap").set_value("viridis").run()
    view = _view(at)
    assert view["show"]["alpha"] == 0.8 and view["layer"]["values_key"] == first["values_key"]
    at.radio(key="ov_norm").set_value("raw")
    at.slider(key="ov_smooth").set_value(1.0).run()
    _no_errors(at)
    assert _view(at)["layer"]["values_key"] != first["values_key"]


def test_slide_without_a_slide_file_uses_a_coordinate_canvas() -> None:
    at = _start()
    at.text_input(key="slide_search").input(NO_SLIDE_ID).run()
    assert at.selectbox(key="slide_pick").value == NO_SLIDE_ID
    assert any("No slide image" in i.value and "coordinate canvas" in i.value for i in at.info)
    assert "over the coordinate canvas" in _main_caption(at)
    view = _view(at)
    assert view["slide"] is None and view["canvas"]["w"] > 0 and view["layer"]["grid"]["n"] > 0
    _no_errors(at)


def test_topk_patch_inspection_shows_every_label_and_zooms_to_it() -> None:
    at = _start()
    at.pills(key="topk_inspect").set_value(0).run()
    assert at.pills(key="topk_inspect").value is None  # a one-shot action: the chips clear
    index = at.selectbox(key="patch_pick").value
    assert index is not None
    table = _frame(at, "percentile")
    assert len(table) == 3 + 7 and set(table["level"]) == {"coarse", "fine"}
    assert table.loc[table["label"] == at.selectbox(key="ov_label").value, "percentile"].max() == (
        pytest.approx(100.0)
    )
    assert any(m.value.startswith(f"**Patch {index}**") for m in at.markdown)
    assert _view(at)["patch_box"][2] == 128  # the inspected patch is outlined on the view
    at.button(key="patch_goto").click().run()
    goto = _view(at)["goto"]
    assert goto["nonce"] == 1 and goto["size"] == 128
    _no_errors(at)


def test_a_patch_clicked_on_the_view_is_inspected() -> None:
    """The view's click callback leaves a request (tested in test_viewer_slide_logic); any
    patch, not only a top-k one, is then inspected."""
    at = _start()
    at.session_state["dz_patch"] = 5
    at.run()
    _no_errors(at)
    assert at.selectbox(key="patch_pick").value == 5
    assert any(m.value.startswith("**Patch 5**") for m in at.markdown)


def test_paths_outside_the_data_roots_are_refused() -> None:
    at = _start()
    at.radio(key="slide_source").set_value("upload").run()
    at.text_input(key="up_ckpt_path").input("/etc/passwd").run()
    assert any("refused: outside the viewer's data roots" in e.value for e in at.error)
    at.sidebar.text_input(key="run_path").input("/etc").run()
    assert any("/etc: refused" in e.value for e in at.sidebar.error)
    assert at.sidebar.selectbox(key="run_picker").value.endswith("run")
    at.text_input(key="up_ckpt_path").input("").run()
    assert at.selectbox(key="up_ckpt").value.endswith("checkpoint.pt")
    assert "Upload a feature bag" in " ".join(i.value for i in at.info)
    caption = " ".join(c.value for c in at.caption)
    assert "Uploads up to 5 MB" in caption


def test_cohort_page_metrics_filters_and_open_on_slide_page() -> None:
    at = _start("views/cohort.py")
    assert at.title[0].value == "Cohort"
    metrics = _frame(at, "fine bal. acc")
    assert list(metrics["fold"]) == ["0", "1", "mean ± std"]
    assert len(at.get("plotly_chart")) == 3  # two confusion matrices + ROC
    listing = _frame(at, "open")
    assert len(listing) == 24
    at.checkbox(key="co_miscls").check().run()
    wrong = _frame(at, "open")
    assert len(wrong) < 24 and (wrong["true_fine"] != wrong["pred_fine"]).all()
    assert wrong["confidence_fine"].is_monotonic_decreasing
    assert wrong["open"].str.startswith("slide?run=").all()
    at.radio(key="co_level").set_value("coarse").run()
    at.selectbox(key="co_true").set_value("malignant").run()
    rows = _frame(at, "open")
    assert set(rows["true_coarse"]) <= {"malignant"}
    assert (rows["pred_coarse"] != "malignant").all()
    target = at.selectbox(key="co_open_pick").value
    at.button(key="co_open").click().run()
    _no_errors(at)
    assert at.title[0].value == "Slide"
    assert at.selectbox(key="slide_pick").value == target


def test_cohort_roc_level_switch() -> None:
    at = _start("views/cohort.py")
    at.radio(key="roc_level").set_value("coarse").run()
    _no_errors(at)
    assert at.radio(key="roc_level").value == "coarse"


def test_link_query_parameters_open_a_slide(viewer_run: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params["run"] = str(viewer_run)
    at.query_params["slide"] = "synth-0005"
    at.run()
    _no_errors(at)
    assert at.selectbox(key="slide_pick").value == "synth-0005"


def test_widget_values_survive_a_visit_to_another_page() -> None:
    at = _start()
    at.radio(key="ov_level").set_value("coarse").run()
    at.switch_page("views/cohort.py").run()
    at.switch_page("views/slide.py").run()
    assert at.radio(key="ov_level").value == "coarse"


def test_training_page_refuses_paths_outside_roots() -> None:
    at = _start("views/train.py")
    assert at.title[0].value == "Training"
    assert _frame(at, "state")["state"].tolist() == ["finished", "finished"]
    at.text_input(key="tr_labels").set_value("/etc/passwd")
    at.button(key="tr_submit").click().run()
    assert any("/etc/passwd: refused" in e.value for e in at.error)


@pytest.mark.slow
def test_launch_a_one_epoch_fold_and_see_it_appear(viewer_root: Path) -> None:
    at = _start("views/train.py")
    new_run = viewer_root / "runs" / "ui-launch"
    at.text_input(key="tr_out").set_value(str(new_run))
    at.text_input(key="tr_folds").set_value("1")
    at.number_input(key="tr_epochs").set_value(1)
    at.text_area(key="tr_extra").set_value((viewer_root / "small.yaml").read_text())
    at.button(key="tr_submit").click().run()
    _no_errors(at)
    assert any("Started training of fold(s) 1" in s.value for s in at.success)
    assert at.selectbox(key="tr_monitor").value == str(new_run)
    deadline = time.monotonic() + 240
    states: list[str] = []
    while time.monotonic() < deadline:
        time.sleep(2)
        at.run()
        if any("state" in d.value.columns for d in at.dataframe):
            states = _frame(at, "state")["state"].tolist()
            if states == ["finished"]:
                break
    assert states == ["finished"], states
    assert (new_run / "fold_1" / "test_metrics.json").is_file()
    assert any(e.label.startswith("launch ") for e in at.expander)
    # the finished fold shows up on the cohort page of that run
    at.sidebar.text_input(key="run_path").input(str(new_run)).run()
    at.switch_page("views/cohort.py").run()
    _no_errors(at)
    assert list(_frame(at, "fine bal. acc")["fold"]) == ["1", "mean ± std"]


@pytest.mark.slow
def test_stop_button_ends_a_running_fold_early(viewer_root: Path) -> None:
    at = _start("views/train.py")
    new_run = viewer_root / "runs" / "ui-stop"
    at.text_input(key="tr_out").set_value(str(new_run))
    at.text_input(key="tr_folds").set_value("0")
    at.number_input(key="tr_epochs").set_value(200)
    at.text_area(key="tr_extra").set_value((viewer_root / "small.yaml").read_text())
    at.button(key="tr_submit").click().run()
    assert any("Started training of fold(s) 0" in s.value for s in at.success)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait until the fold is running its epochs
        time.sleep(1)
        at.run()
        if any(b.key == "tr_stop_0" for b in at.button):
            break
    at.button(key="tr_stop_0").click().run()
    assert (new_run / "fold_0" / "STOP").is_file() or (
        new_run / "fold_0" / "test_metrics.json"
    ).is_file()
    while time.monotonic() < deadline:
        time.sleep(2)
        at.run()
        overview = _frame(at, "state")
        if overview["state"].tolist() == ["finished"]:
            break
    assert overview["state"].tolist() == ["finished"]
    done, total = (int(v) for v in overview["epoch"].iloc[0].split("/"))
    assert total == 200 and done < 200  # stopped after the current epoch, then evaluated
    assert (new_run / "fold_0" / "test_metrics.json").is_file()
