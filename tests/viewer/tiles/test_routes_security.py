"""What someone who can reach the viewer's port can and cannot do: the Training page
runs nobody's code, no file outside the data roots is read, and odd paths never raise."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openslide
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.testclient import TestClient
from streamlit.testing.v1 import AppTest
from viewer_fixtures import APP
from viewer_fixtures import APP_TIMEOUT as TIMEOUT

from hmil.errors import ConfigError
from hmil.procs import pid_alive
from viewer.core import launches, runs, train_form
from viewer.core.paths import PathRefused, check_under_roots, is_under, run_file
from viewer.tiles.geometry import DeepZoomGeometry
from viewer.tiles.registry import AttentionEntry, SlideRegistry
from viewer.tiles.routes import TileService

FAKE_SBATCH = """#!/bin/sh
n=$(cat "$FAKE_SLURM_DIR/next_id" 2>/dev/null || echo 4242)
echo $((n + 1)) > "$FAKE_SLURM_DIR/next_id"
cp "$1" "$FAKE_SLURM_DIR/sbatch_$n.sh"
echo "Submitted batch job $n"
"""


def _form(root: Path, out: Path, **changes: object) -> train_form.TrainForm:
    values: dict[str, object] = {
        "out": str(out),
        "labels": str(root / "cohort" / "labels.csv"),
        "features": str(root / "cohort" / "features"),
        "splits": str(root / "splits"),
        "hierarchy": "bracs",
        "folds": [0],
        "overrides": {"train.epochs": 1},
        "extra_yaml": "",
    }
    values.update(changes)
    return train_form.TrainForm(**values)  # type: ignore[arg-type]


def _roots(viewer_root: Path, tmp_path: Path) -> tuple[Path, ...]:
    """The fixture cohort and ``tmp_path/root`` (where new runs go); ``tmp_path/outside`` is
    outside every root."""
    (tmp_path / "root").mkdir(exist_ok=True)
    return (viewer_root.resolve(), (tmp_path / "root").resolve())


def _config(viewer_root: Path, tmp_path: Path, extra: str) -> object:
    form = _form(viewer_root, tmp_path / "root" / "run", extra_yaml=extra)
    roots = _roots(viewer_root, tmp_path)
    return train_form.build_config(form, train_form.checked_paths(form, roots))


def _wait_until_ended(pid: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(pid), f"launched process {pid} still running"


# ----------------------------------------------------------------------------- item 1


@pytest.mark.parametrize(
    ("extra", "refusal"),
    [
        ("launcher: {kind: slurm, extra: {setup: ['touch /tmp/pwned']}}", "'launcher.extra'"),
        ("launcher:\n  extra: {constraint: a100}\n", "cannot be set from the viewer"),
        ("data: {labels: /etc/passwd}\n", "section 'data' cannot be set here"),
        ('launcher: {kind: slurm, partition: "gpu\\nrm -rf ~"}\n', "launcher.partition"),
        ('launcher: {kind: slurm, account: "lab\\r\\ntouch x"}\n', "one line"),
        ("model: &m {hidden_dim: 8}\nloss: *m\n", "anchors"),
        ("train:\n  epochs: 2\n  epochs: 3\n", "duplicate key"),
        ("model:\n  hidden_dim: 8\n" + "# padding\n" * 2000, "16384-byte limit"),
        ("[1, 2]", "must be a mapping"),
    ],
)
def test_more_config_accepts_only_the_vetted_subset(
    viewer_root: Path, tmp_path: Path, extra: str, refusal: str
) -> None:
    with pytest.raises(ConfigError, match=refusal.replace("(", r"\(")):
        _config(viewer_root, tmp_path, extra)


def test_more_config_still_sets_model_loss_train_and_launcher_resources(
    viewer_root: Path, tmp_path: Path
) -> None:
    config = _config(
        viewer_root,
        tmp_path,
        "model: {hidden_dim: 8}\nloss: {inst_align: {enabled: false}}\ntrain: {lr: 1e-4}\n"
        "launcher: {kind: slurm, partition: gpu-a100, account: lab, qos: high, gpus_per_job: 1}\n",
    )
    assert config.model.hidden_dim == 8 and config.loss.inst_align.enabled is False  # type: ignore[attr-defined]
    assert config.train.lr == 1e-4 and config.launcher.partition == "gpu-a100"  # type: ignore[attr-defined]
    assert config.launcher.extra == {}  # type: ignore[attr-defined]


def test_a_slurm_launch_from_the_page_writes_no_shell_line_of_the_user(
    viewer_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sbatch script of a page launch holds submitit's two command lines and nothing else."""
    fake = tmp_path / "fake_slurm"
    fake.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", "#!/bin/sh\nexit 0\n")):
        (fake / name).write_text(text)
        (fake / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(fake))
    run = tmp_path / "root" / "slurm-page"
    form = _form(viewer_root, run, extra_yaml="launcher: {kind: slurm, partition: gpu}\n")
    config = train_form.build_config(
        form, train_form.checked_paths(form, _roots(viewer_root, tmp_path))
    )
    launch = launches.start_training_process(run, config)
    _wait_until_ended(launch.pid)
    scripts = sorted(fake.glob("sbatch_*.sh"))
    assert scripts, launches.log_tail(launch.log)
    lines = [ln for ln in scripts[0].read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 2, lines
    assert lines[0] == "export SUBMITIT_EXECUTOR=slurm" and lines[1].startswith("srun ")
    assert "#SBATCH --partition=gpu" in scripts[0].read_text()


def test_training_starts_isolated_so_a_planted_module_is_never_imported(
    viewer_root: Path, tmp_path: Path
) -> None:
    """Before: ``python -m hmil`` with the run folder as working directory imported a ``yaml.py``
    planted there (it wrote the marker)."""
    roots = _roots(viewer_root, tmp_path)
    run = tmp_path / "root" / "planted"
    run.mkdir(parents=True)
    marker = tmp_path / "PWNED"
    (run / "yaml.py").write_text(f"open({str(marker)!r}, 'w').write('x')\nfrom yaml import *\n")
    form = _form(viewer_root, run, splits=str(tmp_path / "root" / "no-such-splits"))
    config = train_form.build_config(form, train_form.checked_paths(form, roots))
    launch = launches.start_training_process(run, config)
    assert launch.command[1:5] == ("-I", "-u", "-m", "hmil")
    _wait_until_ended(launch.pid)
    assert "error: " in launches.log_tail(launch.log)  # it ran (and refused the missing splits)
    assert not marker.exists()


# ----------------------------------------------------------------------------- item 2


def _outside_copy(src: Path, outside: Path) -> Path:
    outside.mkdir(parents=True, exist_ok=True)
    target = outside / f"{src.parent.name}-{src.name}"
    shutil.move(src, target)
    src.symlink_to(target)
    return target


def test_files_linked_out_of_a_run_are_not_followed(viewer_run: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    run = root / "run"
    shutil.copytree(viewer_run, run)
    outside = tmp_path / "outside"
    fold0 = run / "fold_0"
    for name in ("checkpoint.pt", "predictions.csv", "test_metrics.json"):
        _outside_copy(fold0 / name, outside)
    _outside_copy(run / "summary.json", outside)
    assert set(runs.run_checkpoints(run)) == {1}  # before: {0, 1}
    assert set(runs.load_predictions(run)["fold"]) == {1}  # before: fold 0's rows too
    assert set(runs.fold_test_metrics(run)) == {1}
    assert runs.run_summary(run) == {}
    assert fold0 / "checkpoint.pt" not in runs.list_checkpoints([run])
    _outside_copy(run / "config.yaml", outside)
    with pytest.raises(Exception, match="not a run directory"):
        runs.load_run_info(run, (root,))


def test_a_launch_record_naming_a_log_outside_the_run_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("TOP-SECRET\n")
    run = tmp_path / "root" / "run"
    (run / "launches").mkdir(parents=True)
    own = run / "launches" / "a.log"
    own.write_text("epoch 1\n")
    records = [
        {"pid": 1, "started": "t0", "folds": "0", "log": str(secret)},
        {
            "pid": "x",
            "started": "t1",
            "folds": "0",
            "log": str(run / "launches" / ".." / ".." / ".." / "outside" / "secret.txt"),
        },
        {"pid": 2, "started": "t2", "folds": "1", "log": str(own)},
        ["not", "a", "record"],
    ]
    (run / "launches.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    shown = launches.read_launches(run)
    assert [r["started"] for r in shown] == ["t2", "t1", "t0"]
    assert [r["log"] for r in shown] == [own.resolve(), None, None]
    assert all("TOP-SECRET" not in launches.log_tail(r["log"]) for r in shown)
    assert launches.log_tail(shown[0]["log"]) == "epoch 1"


def test_a_hierarchy_without_a_yaml_suffix_is_checked_like_any_file(
    viewer_run: Path, viewer_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside" / "tree"  # no suffix: before, no roots check at all
    outside.parent.mkdir()
    outside.write_text(
        "coarse: [a, b]\nfine: {N: a, PB: a, UDH: a, FEA: b, ADH: b, DCIS: b, IC: b}\n"
    )
    root = tmp_path / "runs"
    run = root / "run"
    shutil.copytree(viewer_run, run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("hierarchy: bracs", f"hierarchy: {outside}"))
    with pytest.raises(PathRefused, match=r"not a preset \(bracs, ccc, panda\); refused: outside"):
        runs.load_run_info(run, (root.resolve(),))
    roots = _roots(viewer_root, tmp_path)
    out = tmp_path / "root" / "h"
    with pytest.raises(PathRefused, match="not a preset"):
        train_form.checked_paths(_form(viewer_root, out, hierarchy=str(outside)), roots)
    inside = tmp_path / "root" / "tree-no-suffix"
    shutil.copy(outside, inside)
    form = _form(viewer_root, out, hierarchy=str(inside))
    paths = train_form.checked_paths(form, roots)
    assert paths["hierarchy"] == inside.resolve()
    assert train_form.build_config(form, paths).data.hierarchy == str(inside.resolve())
    assert "hierarchy" not in train_form.checked_paths(_form(viewer_root, out), roots)


def test_split_files_linked_out_of_the_roots_are_refused(viewer_root: Path, tmp_path: Path) -> None:
    roots = _roots(viewer_root, tmp_path)
    splits = tmp_path / "root" / "linked-splits"
    splits.mkdir()
    outside = tmp_path / "splits_0.csv"
    shutil.copy(viewer_root / "splits" / "splits_0.csv", outside)
    (splits / "splits_0.csv").symlink_to(outside)
    shutil.copy(viewer_root / "splits" / "splits_1.csv", splits / "splits_1.csv")
    train_form.check_split_files(splits, [1], roots)
    with pytest.raises(PathRefused, match=r"splits_0\.csv: refused: outside"):
        train_form.check_split_files(splits, [0, 1], roots)


# ----------------------------------------------------------------------------- the gate


def test_the_gate_refuses_what_cannot_be_looked_up(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    for text, problem in [
        (f"{tmp_path}/x\x00y", "contains a NUL byte"),  # before: ValueError
        (f"{tmp_path}/loop/x", "symlink loop"),  # before: RuntimeError
        (f"{tmp_path}/a", "symlink loop"),
        (f"{tmp_path}/{'x' * 300}", "File name too long"),
        (f"{tmp_path}/\ud800", "cannot look this path up"),
        ("~no-such-user-hmil/x", "could not determine home directory"),
    ]:
        with pytest.raises(PathRefused, match=problem) as info:
            check_under_roots(text, [tmp_path])
        str(info.value).encode("utf-8")  # printable on the page
        assert not is_under(text, [tmp_path])
        assert run_file(tmp_path, text) is None


def test_typed_paths_with_a_nul_byte_or_a_loop_show_an_error_not_an_exception(
    app_env: Path, tmp_path: Path
) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    for text in (f"{app_env}/run\x00", f"{loop}/run"):
        at.sidebar.text_input(key="run_path").input(text).run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("refused" in e.value for e in at.sidebar.error)
    at.radio(key="slide_source").set_value("upload").run()
    at.text_input(key="up_ckpt_path").input(f"{loop}/checkpoint.pt").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("symlink loop" in e.value for e in at.error)


_parts = st.sampled_from(["..", ".", "in", "out", "link_in", "link_out", "loop", "x", "~", ""])


@pytest.fixture(scope="module")
def link_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/`` with links to inside, to outside, a loop; ``outside/`` beside it."""
    base = tmp_path_factory.mktemp("gate")
    root, outside = base / "root", base / "outside"
    (root / "in").mkdir(parents=True)
    outside.mkdir()
    (outside / "x").write_text("secret")
    (root / "in" / "x").write_text("ok")
    (root / "link_in").symlink_to(root / "in")
    (root / "link_out").symlink_to(outside)
    (root / "in" / "link_out").symlink_to(outside / "x")
    (root / "loop").symlink_to(root / "loop")
    return base


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(parts=st.lists(_parts, min_size=1, max_size=6), junk=st.text(max_size=8))
def test_whatever_is_typed_the_gate_accepts_only_paths_under_the_root(
    link_tree: Path, parts: list[str], junk: str
) -> None:
    root = link_tree / "root"
    text = "/".join([str(root), *parts]) + junk
    try:
        target = check_under_roots(text, [root])
    except PathRefused as exc:
        str(exc).encode("utf-8")
        return
    real_root = os.path.realpath(root)
    assert os.path.commonpath([os.path.realpath(target), real_root]) == real_root
    assert "secret" not in (target.read_text() if target.is_file() else "")


def test_the_launched_command_does_not_see_pythonpath(tmp_path: Path) -> None:
    """``-I`` ignores PYTHON* variables and the working directory: what an isolated child
    imports comes from the installation only."""
    (tmp_path / "hmil").mkdir()
    (tmp_path / "hmil" / "__init__.py").write_text("raise SystemExit('planted hmil imported')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-I", "-c", "import hmil, sys; print(hmil.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert not out.stdout.strip().startswith(str(tmp_path))


# ----------------------------------------------------------------------------- tile routes


@pytest.fixture(scope="module")
def tile_client(viewer_root: Path) -> tuple[TestClient, str, str, int]:
    """The tile routes over the fixture slide and a small attention map: client, slide key,
    overlay key and the last (full-resolution) Deep Zoom level."""
    slide = viewer_root / "cohort" / "slides" / "synth-0000.tiff"
    registry = SlideRegistry()
    with openslide.OpenSlide(str(slide)) as osr:
        size = osr.dimensions
    key = registry.register_slide(slide, [viewer_root], size)
    coords = np.array([[0, 0], [128, 0]])
    entry = AttentionEntry(size[0], size[1], coords, 128, {"fine": np.array([[0.3, 0.7]])})
    okey = registry.register_attention("security", entry)
    client = TestClient(Starlette(routes=TileService(registry).routes()))
    return client, key, okey, DeepZoomGeometry(*size).level_count - 1


@pytest.mark.parametrize(
    "address",
    [
        "/hmil/dz/{key}_files/" + "9" * 5000 + "/0_0.jpeg",  # before: 500 (int() refuses)
        "/hmil/dz/{key}_files/{top}/" + "9" * 5000 + "_0.jpeg",
        "/hmil/ov/{okey}/fine-0-jet-raw-" + "9" * 5000 + "_files/{top}/0_0.png",
        "/hmil/ov/{okey}/fine-0-jet-raw-9999.dzi",  # before: 500 (smoothing 99.99 > 64)
        "/hmil/ov/{okey}/fine-0-jet-raw-6401_files/{top}/0_0.png",  # before: 500
        "/hmil/dz/{key}_files/{top}/%D9%A3_0.jpeg",  # an Arabic-Indic digit
        "/hmil/dz/{key}_files/{top}/nan_inf.jpeg",
        "/hmil/dz/{key}_files/-0/0_0.jpeg",
        "/hmil/ov/{okey}/fine-%D9%A0-jet-raw-0.dzi",
    ],
)
def test_a_malformed_tile_address_is_a_short_404_not_a_500(
    tile_client: tuple[TestClient, str, str, int], address: str
) -> None:
    client, key, okey, top = tile_client
    response = client.get(address.format(key=key, okey=okey, top=top))
    assert response.status_code == 404, response.text[:200]
    assert len(response.text) < 100 and "Traceback" not in response.text
