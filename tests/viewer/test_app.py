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


def _facts(at: AppTest) -> str:
    """The line of slide facts under the view."""
    return next(c.value for c in at.caption if "µm/px" in c.value or "canvas" in c.value)


def _view(at: AppTest) -> dict:
    """The data the deep-zoom component got (what the browser draws)."""
    (element,) = at.get("bidi_component")
    assert element.proto.component_name == "hmil_deepzoom"
    return json.loads(element.proto.json or element.proto.mixed.json)


def test_slide_page_shows_prediction_overlay_and_banner(viewer_root: Path) -> None:
    at = _start()
    assert any("SYNTHETIC data" in w.value for w in at.warning)
    assert at.selectbox(key="slide_pick").value == "synth-0000"
    assert at.selectbox(key="slide_fold").value in (0, 1)
    assert not at.get("plotly_chart")  # the bars are one HTML block (light in the browser)
    (bars,) = [m.value for m in at.markdown if "hmil-probabilities" in m.value]
    assert bars.count('role="progressbar"') == 3 + 3 + 7  # coarse (summed), classifier, fine
    assert bars.count("<b>") == 3 + 3  # the titles, and one prediction in bold per level
    assert bars.count(">truth</b>") == 3  # the truth in each
    assert "Mᵀ" not in bars and "coarse classifier" in bars  # plain names
    assert "0.5 µm/px" in _facts(at) and "layer:" not in _facts(at)
    assert sum(c.startswith("#") for c in _images(at)) == 8  # top-k gallery
    assert "Prediction:" in " ".join(m.value for m in at.markdown)
    assert any(c.value.startswith("model: viewer0/run · fold") for c in at.caption)  # not a path
    view = _view(at)
    assert view["show"]["level"] == "fine"
    predicted = view["layer"]["predicted"]["fine"]
    assert view["show"]["label"] == predicted  # a slide opens on its predicted label
    assert view["truth"]["fine"] in view["layer"]["names"]["fine"]  # t switches to it
    assert view["show"]["outline"], "the ground-truth lesion outline is drawn on the view"
    assert view["slide"]["mpp"] == 0.5 and view["layer"]["strategy"] == "canvas"
    # the default map: the shared relative scale with its legend, viridis
    fine = view["layer"]["levels"]["fine"]
    assert len(fine["scales"]) == 1 and fine["scale_of"] == [0] * 7
    legend = fine["scales"][0]["legend"]
    assert legend["title"].startswith("attention × an average patch") and legend["uncoloured"]
    assert len(fine["scales"][0]["texts"]) == 256
    # the tile routes serve exactly the slide the page shows, under an opaque key
    key = view["slide"]["dzi"].split("/")[-1].removesuffix(".dzi")
    expected = viewer_root / "cohort" / "slides" / "synth-0000.tiff"
    assert shared_registry().slide_path(key) == expected.resolve()
    assert str(expected) not in json.dumps(view)  # no path reaches the browser


def test_a_label_chosen_on_the_view_changes_the_page() -> None:
    """The view's label strip reports a label (callback tested in test_viewer_slide_logic);
    the page follows: the gallery, the layer stays (no reload)."""
    at = _start()
    before = _view(at)
    at.session_state["ov_level"] = "coarse"
    at.session_state["ov_label"] = "malignant"
    at.run()
    _no_errors(at)
    assert at.subheader[-1].value == "Top patches · coarse · malignant"
    after = _view(at)
    assert (after["show"]["level"], after["show"]["label"]) == ("coarse", "malignant")
    assert after["slide"] == before["slide"] and after["layer"] == before["layer"]  # no reload


def test_all_labels_of_a_level_as_small_multiples() -> None:
    at = _start()
    at.session_state["ov_mode"] = "all"
    at.run()
    _no_errors(at)
    view = _view(at)
    assert view["show"]["mode"] == "all"
    assert view["layer"]["names"]["fine"] == ["N", "PB", "UDH", "FEA", "ADH", "DCIS", "IC"]


def test_style_controls_change_the_layer_bytes_only_when_needed() -> None:
    at = _start()
    first = _view(at)
    assert not at.get("selectbox") or all(s.key != "w_cmap" for s in at.selectbox)  # closed
    at.toggle(key="ov_style_open").set_value(True).run()
    at.selectbox(key="w_cmap").set_value("magma").run()
    view = _view(at)
    assert view["layer"]["values_key"] == first["layer"]["values_key"]  # only a recolour
    assert view["show"]["lut"] != first["show"]["lut"]
    first = first["layer"]
    at.checkbox(key="w_per_label").check().run()
    per_label = _view(at)["layer"]
    assert per_label["values_key"] != first["values_key"]
    scales = per_label["levels"]["fine"]["scales"]
    assert all("this label's range" in s["legend"]["title"] for s in scales)
    at.radio(key="w_norm").set_value("percentile")
    at.slider(key="w_smooth").set_value(1.0).run()
    _no_errors(at)
    legend = _view(at)["layer"]["levels"]["fine"]["scales"][0]["legend"]
    assert "percentile" in legend["title"]


def test_slide_without_a_slide_file_uses_a_white_canvas() -> None:
    at = _start()
    at.selectbox(key="slide_pick").set_value(NO_SLIDE_ID).run()
    assert at.selectbox(key="slide_pick").value == NO_SLIDE_ID
    view = _view(at)
    assert "No slide image" in view["note"] and "white canvas" in view["note"]
    assert "white canvas" in _facts(at)
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
    label = _view(at)["show"]["label"]
    row = table[(table["level"] == "fine") & (table["label"] == label)].iloc[0]
    assert row["percentile"] == pytest.approx(100.0)
    n = _view(at)["layer"]["n"]
    assert row["× average patch"] == pytest.approx(row["attention"] * n, abs=0.006)
    assert any("attention × an average patch" in m.value for m in at.markdown)  # the bars
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


def test_next_slide_forgets_the_previous_slides_label_and_patch() -> None:
    at = _start()
    first = at.selectbox(key="slide_pick").value
    at.session_state["ov_label"] = "IC"
    at.session_state["dz_patch"] = 3
    at.run()
    assert _view(at)["show"]["label"] == "IC" and at.selectbox(key="patch_pick").value == 3
    at.session_state["dz_nav"] = 1  # the view's "next" (button or key n)
    at.run()
    _no_errors(at)
    second = at.selectbox(key="slide_pick").value
    assert second != first
    view = _view(at)
    assert view["show"]["label"] == view["layer"]["predicted"]["fine"]  # its own prediction
    assert view["patch_box"] is None and at.selectbox(key="patch_pick").value is None
    assert view["nav"] == {"has_prev": True, "has_next": True, "unreviewed": True}  # key u on
    at.session_state["dz_nav"] = -1
    at.run()
    assert at.selectbox(key="slide_pick").value == first


def test_step_through_the_misclassified_slides() -> None:
    at = _start()
    at.selectbox(key="browse_list").set_value("wrong_fine").run()
    _no_errors(at)
    options = at.selectbox(key="slide_pick").options
    assert all("✗" in o for o in options[1:] or options), options
    shown = at.selectbox(key="slide_pick").value
    at.session_state["dz_nav"] = 1
    at.run()
    assert at.selectbox(key="slide_pick").value != shown


def test_paths_outside_the_data_roots_are_refused() -> None:
    at = _start()
    at.sidebar.radio(key="slide_source").set_value("upload").run()
    at.sidebar.text_input(key="up_ckpt_path").input("/etc/passwd").run()
    assert any(
        "refused: outside the viewer's data roots" in e.value.replace("\\", "")
        for e in at.sidebar.error
    )
    at.sidebar.text_input(key="run_path").input("/etc").run()
    assert any("/etc: refused" in e.value.replace("\\", "") for e in at.sidebar.error)
    assert at.sidebar.selectbox(key="run_picker").value.endswith("run")
    at.sidebar.text_input(key="up_ckpt_path").input("").run()
    assert at.sidebar.selectbox(key="up_ckpt").value.endswith("checkpoint.pt")
    assert "Upload a feature bag" in " ".join(i.value for i in at.info)
    labels = " ".join(u.proto.label for u in at.get("file_uploader"))
    assert labels.count("up to 5 MB") == 2 and "512" not in labels


def _upload(at: AppTest, viewer_root: Path, bag: str, slide: str | None) -> None:
    """What a bag (and slide) uploaded earlier leaves in the session (AppTest cannot drive a
    file uploader): the saved files, as :func:`slide_pick._kept_upload` keeps them."""
    cohort = viewer_root / "cohort"
    saved = {"bag": (str(cohort / "features" / f"{bag}.h5"), f"{bag}.h5")}
    if slide is not None:
        saved["slide"] = (str(cohort / "slides" / f"{slide}.tiff"), f"{slide}.tiff")
    at.session_state["up_saved"] = saved
    at.session_state["upload_dir"] = str(cohort)  # the admitted root of the saved files
    at.session_state["up_ckpt"] = str(viewer_root / "run" / "fold_0" / "checkpoint.pt")
    at.sidebar.radio(key="slide_source").set_value("upload").run()


def test_uploads_survive_a_switch_of_source_and_back(viewer_root: Path) -> None:
    at = _start()
    _upload(at, viewer_root, "synth-0002", "synth-0002")
    _no_errors(at)
    assert _view(at)["slide"] is not None
    at.sidebar.radio(key="slide_source").set_value("run").run()
    at.sidebar.radio(key="slide_source").set_value("upload").run()
    _no_errors(at)
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert "synth\\-0002.h5 (uploaded earlier)" in captions or "(uploaded earlier)" in captions
    assert _view(at)["slide"] is not None


def test_a_bag_over_another_slide_is_refused_until_the_user_says_it_was_renamed(
    viewer_root: Path, tmp_path: Path
) -> None:
    """A bag that records its slide (as ``hmil tile`` writes it) uploaded with another slide:
    the page says so and draws nothing over the wrong tissue, unless told the file was
    renamed."""
    import shutil

    import h5py

    from hmil.slides import open_slide

    cohort = viewer_root / "cohort"
    bag = tmp_path / "synth-0002.h5"
    shutil.copy(cohort / "features" / "synth-0002.h5", bag)
    with open_slide(cohort / "slides" / "synth-0002.tiff") as own:
        width, height = own.dimensions
    with h5py.File(bag, "a") as f:
        f["coords"].attrs.update({"name": "synth-0002", "level0_width": width,
                                  "level0_height": height})  # fmt: skip
    at = _start()
    _upload(at, viewer_root, "synth-0002", "synth-0004")
    saved = dict(at.session_state["up_saved"])
    saved["bag"] = (str(bag), "synth-0002.h5")
    at.session_state["up_saved"] = saved
    at.run()
    errors = " ".join(e.value for e in at.error)
    assert "does not belong to this slide" in errors and "synth\\-0004" in errors, errors
    assert _view(at)["slide"] is None  # not drawn over the wrong tissue
    at.checkbox(key="slide_mismatch_ok").check().run()
    assert _view(at)["slide"] is not None


def test_a_synthetic_model_on_an_uploaded_slide_is_flagged(viewer_root: Path) -> None:
    """The fixture run's model was trained on a SYNTHETIC cohort: on an upload (not a slide
    of that cohort's run page) its prediction carries the warning beside it."""
    at = _start()
    assert not any("Model trained on SYNTHETIC" in w.value for w in at.warning)  # its own run
    _upload(at, viewer_root, "synth-0002", "synth-0002")
    _no_errors(at)
    texts = " ".join(w.value for w in at.warning)
    assert "Model trained on SYNTHETIC slides" in texts


def test_a_slide_file_alone_opens_without_a_bag(viewer_root: Path) -> None:
    at = _start()
    at.sidebar.radio(key="slide_source").set_value("file").run()
    _no_errors(at)
    files = at.sidebar.selectbox(key="file_pick").options
    assert any("synth-0001.tiff" in f for f in files)
    view = _view(at)
    assert view["layer"] is None and view["slide"] is not None
    assert view["note"].startswith("Slide only")


def test_cohort_page_rows_open_slides_in_this_tab_with_their_list() -> None:
    at = _start("views/cohort.py")
    assert at.title[0].value == "Cohort"
    metrics = _frame(at, "fine bal. acc")
    assert list(metrics["fold"]) == ["0", "1", "mean ± std"]
    assert "coarse classifier bal. acc" in metrics.columns
    charts = [c.key for c in at.get("plotly_chart")]
    assert charts == ["cm_coarse", "cm_fine", "roc_chart", "reliability"]  # + calibration
    listing = _frame(at, "slide_id")
    assert len(listing) == 24 and "open" not in listing.columns
    at.checkbox(key="co_miscls").check().run()
    wrong = _frame(at, "slide_id")
    assert len(wrong) < 24 and (wrong["true_fine"] != wrong["pred_fine"]).all()
    assert wrong["confidence_fine"].is_monotonic_decreasing
    at.button(key="co_open").click().run()
    _no_errors(at)
    assert at.selectbox(key="slide_pick").value == wrong["slide_id"].iloc[0]
    assert at.selectbox(key="browse_list").value == "cohort"
    ids = at.session_state["cohort_list"]
    assert ids[0] == wrong["slide_id"].iloc[0]


def test_cohort_roc_level_switch() -> None:
    at = _start("views/cohort.py")
    at.radio(key="roc_level").set_value("coarse").run()
    _no_errors(at)
    assert at.radio(key="roc_level").value == "coarse"


def test_an_address_opens_that_view(viewer_run: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    for name, value in {
        "run": str(viewer_run), "slide": "synth-0005", "level": "coarse", "label": "benign",
        "scale": "percentile", "cmap": "magma", "x": "300", "y": "400", "zoom": "0.5",
        "alpha": "7",
    }.items():  # fmt: skip
        at.query_params[name] = value
    at.run()
    _no_errors(at)
    assert at.selectbox(key="slide_pick").value == "synth-0005"
    view = _view(at)
    assert (view["show"]["level"], view["show"]["label"]) == ("coarse", "benign")
    assert "percentile" in view["layer"]["levels"]["coarse"]["scales"][0]["legend"]["title"]
    assert view["viewport"]["x"] == 300 and view["viewport"]["zoom"] == 0.5
    assert at.session_state["ov_cmap"] == "magma" and view["show"]["lut"] == magma_lut()
    notes = " ".join(c.value for c in at.caption)
    assert "alpha=7" in notes and "ignored" in notes  # an invalid value is ignored, said once
    assert view["show"]["alpha"] == 0.5


def test_an_address_opens_a_slide_file_alone(viewer_root: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params["src"] = "file"
    at.query_params["file"] = str(viewer_root / "cohort" / "slides" / "synth-0001.tiff")
    at.run()
    _no_errors(at)
    view = _view(at)
    assert view["layer"] is None and view["slide"]["width"] > 0
    assert view["note"].startswith("Slide only")
    outside = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    outside.query_params["src"] = "file"
    outside.query_params["file"] = "/etc/passwd"
    outside.run()
    notes = " ".join(c.value for c in outside.caption)
    assert "/etc/passwd" in notes and "refused" in notes  # never read, said once
    assert all(
        str(Path("/etc/passwd")) not in o
        for o in outside.sidebar.selectbox(key="file_pick").options
    )


def test_the_page_writes_its_address(viewer_run: Path) -> None:
    at = _start()
    params = dict(at.query_params)
    assert params["slide"] == ["synth-0000"] or params["slide"] == "synth-0000"
    at.selectbox(key="slide_pick").set_value("synth-0004").run()
    params = {k: (v[-1] if isinstance(v, list) else v) for k, v in at.query_params.items()}
    assert params["slide"] == "synth-0004" and params["run"] == str(viewer_run)
    assert params["level"] == "fine" and params["scale"] == "relative"


def test_widget_values_survive_a_visit_to_another_page() -> None:
    at = _start()
    at.toggle(key="ov_style_open").set_value(True).run()
    at.selectbox(key="w_cmap").set_value("magma").run()
    at.toggle(key="ov_style_open").set_value(False).run()  # the controls leave the page
    assert _view(at)["show"]["lut"] == magma_lut()
    at.switch_page("views/cohort.py").run()
    at.switch_page("views/slide.py").run()
    assert _view(at)["show"]["lut"] == magma_lut()
    at.toggle(key="ov_style_open").set_value(True).run()
    assert at.selectbox(key="w_cmap").value == "magma"


def magma_lut() -> str:
    from viewer.tiles.overlay import lut_b64

    return lut_b64("magma")


def test_training_page_refuses_paths_outside_roots() -> None:
    at = _start("views/train.py")
    assert at.title[0].value == "Training"
    assert _frame(at, "state")["state"].tolist() == ["finished", "finished"]
    at.text_input(key="tr_labels").set_value("/etc/passwd")
    at.button(key="tr_submit").click().run()
    assert any("/etc/passwd: refused" in e.value.replace("\\", "") for e in at.error)


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
