"""Every code example of README.md and docs/*.md runs, or says in the page why it cannot.

Collected: fenced ``python`` blocks (run as they are) and ``bash`` / ``sh`` / ``console`` blocks
(their ``hmil …`` commands, run through ``hmil.cli.main``; a console block's commands are its
``$ `` lines); ``yaml`` blocks that are configs or label trees are loaded as such. A block
that cannot run here (a GPU, a cluster, your slides or weights, a long training, a server)
carries ``<!-- not-run: why -->`` on the line right before its fence; each such block is
reported as a skip with that reason, so none is left out silently. A runnable shell block may
hold only ``hmil`` commands.

The blocks of one page run in order, in one sandbox made from a tiny SYNTHETIC cohort: the
files the examples name (``labels.csv``, ``features/``, ``FEATURES/h5_files/``, ``splits/``,
``runs/bracs`` with one trained fold, ``checkpoint.pt``, ``bags/s1.h5``, ``bag.npy``) exist there.
"""

from __future__ import annotations

import contextlib
import glob
import io
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hmil.cli import main
from hmil.config import Config
from hmil.data.bags import load_bag
from hmil.data.labels import read_labels
from hmil.data.splits import make_splits, write_splits
from hmil.hierarchy import Hierarchy
from hmil.synthetic import CohortSpec, make_cohort, write_cohort
from hmil.train.api import train

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELLS = ("bash", "sh", "console")
LANGUAGES = ("python", "yaml", *SHELLS)
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
NOT_RUN = re.compile(r"^\s*<!--\s*not-run:\s*(?P<why>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str  # path relative to the repository
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason, when the page marks the block

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def parse_blocks(text: str, page: str) -> list[Block]:
    """The fenced blocks of a Markdown text in the given languages, with their marks."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening or not opening["lang"]:
            i += 1
            continue
        indent = len(opening["indent"])
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if opening["lang"] in LANGUAGES:
            mark = NOT_RUN.match(lines[i - 1]) if i > 0 else None
            code = "\n".join(line[indent:] for line in lines[i + 1 : end])
            blocks.append(
                Block(page, i + 1, opening["lang"], code + "\n", mark["why"] if mark else None)
            )
        i = end + 1
    return blocks


def shell_commands(block: Block) -> list[list[str]]:
    """The commands of a shell block as argument lists (continuations joined, comments and a
    console block's output lines dropped)."""
    lines = block.code.replace("\\\n", " ").splitlines()
    if block.lang == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    return [argv for line in lines if (argv := shlex.split(line, comments=True))]


def all_blocks() -> list[Block]:
    return [
        block
        for page in PAGES
        for block in parse_blocks(page.read_text(encoding="utf-8"), str(page.relative_to(REPO)))
    ]


BLOCKS = all_blocks()
RUN_PAGES = sorted({b.page for b in BLOCKS if b.not_run is None and b.lang != "yaml"})
SECTIONS = set(Config().to_dict())


def yaml_kind(block: Block) -> str | None:
    """``config`` (top-level keys are config sections), ``hierarchy`` (``coarse`` and ``fine``)
    or None (another YAML file, e.g. of a format, which is not checked)."""
    data = yaml.safe_load(block.code)
    if not isinstance(data, dict) or not data:
        return None
    if set(data) <= SECTIONS:
        return "config"
    if {"coarse", "fine"} <= set(data):
        return "hierarchy"
    return None


YAML_EXAMPLES = [b for b in BLOCKS if b.lang == "yaml" and b.not_run is None and yaml_kind(b)]


# ---- the sandbox ------------------------------------------------------------------------------
SMALL_MODEL = {"model.hidden_dim": 16, "model.coarse_dim": 32, "model.fine_dim": 16,
               "model.coarse_attention_dim": 16, "model.fine_attention_dim": 8}  # fmt: skip


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the examples name, made once: 35 SYNTHETIC bags (5 per BRACS fine class,
    D = 8) and a one-fold run trained for one epoch with a tiny model."""
    root = tmp_path_factory.mktemp("docs-sandbox")
    bracs = Hierarchy.preset("bracs")
    spec = CohortSpec(n_slides=35, dim=8, grid_min=4, grid_max=5, key_fraction=0.1)
    write_cohort(make_cohort(bracs, spec, seed=3), bracs, root)
    labels = read_labels(root / "labels.csv", bracs)
    write_splits(make_splits(labels, k=1, seed=0, val_frac=0.2, test_frac=0.3), root / "splits")
    config = Config().override({
        "data.labels": str(root / "labels.csv"), "data.features": str(root / "features"),
        "data.splits": str(root / "splits"), "data.hierarchy": "bracs", "train.epochs": 1,
        "train.device": "cpu", "launcher.threads": 1, **SMALL_MODEL,
    })  # fmt: skip
    train(config, root / "runs" / "bracs", verbose=False)
    first = sorted((root / "features").glob("*.h5"))[0]
    for alias in ("bags/s1.h5", "features/s1.h5", "FEATURES/h5_files/BRACS_001.h5"):
        (root / alias).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(first, root / alias)
    shutil.copy(root / "runs" / "bracs" / "fold_0" / "checkpoint.pt", root / "checkpoint.pt")
    np.save(root / "bag.npy", load_bag(first).features.numpy())
    return root


def run_block(block: Block) -> None:
    """Run one block in the current directory; a failure names the page and line."""
    if block.lang == "yaml":
        return  # checked by test_config_and_hierarchy_examples_are_valid
    if block.lang == "python":
        code = compile(block.code, block.where, "exec")
        exec(code, {"__name__": "__docs_example__"})
        return
    for argv in shell_commands(block):
        assert argv[0] == "hmil", (
            f"{block.where}: `{shlex.join(argv)}` is not an hmil command; mark the block "
            "<!-- not-run: why --> or show only hmil commands"
        )
        args = [expanded for arg in argv[1:] for expanded in _glob(arg)]
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(args)
        assert code == 0, f"{block.where}: `{shlex.join(argv)}` exited {code}: {err.getvalue()}"


def _glob(arg: str) -> list[str]:
    """The shell's pattern expansion (a pattern without matches stays as it is)."""
    if any(c in arg for c in "*?["):
        return sorted(glob.glob(arg)) or [arg]
    return [arg]


# ---- the tests --------------------------------------------------------------------------------
@pytest.mark.parametrize("page", RUN_PAGES)
def test_the_examples_of_each_page_run(page, template, tmp_path, monkeypatch):
    sandbox = tmp_path / "sandbox"
    shutil.copytree(template, sandbox, symlinks=True)
    monkeypatch.chdir(sandbox)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the examples' tiny models: threads only contend on a busy machine
    try:
        for block in [b for b in BLOCKS if b.page == page and b.not_run is None]:
            run_block(block)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("block", YAML_EXAMPLES, ids=lambda b: b.where)
def test_config_and_hierarchy_examples_are_valid(block):
    data = yaml.safe_load(block.code)
    if yaml_kind(block) == "config":
        config = Config.from_dict(data, source=block.where)
        for section, values in data.items():
            for key in values:
                assert key in config.to_dict()[section], f"{block.where}: {section}.{key}"
    else:
        hierarchy = Hierarchy.from_dict(data, source=block.where)
        assert list(hierarchy.fine) == list(data["fine"])


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.not_run is not None], ids=lambda b: b.where
)
def test_examples_marked_not_run_say_why(block):
    assert len(block.not_run or "") >= 8, f"{block.where}: say why the block cannot run"
    pytest.skip(f"{block.where} not run: {block.not_run}")


def test_the_collector_reads_fences_marks_prompts_and_continuations():
    text = (
        "intro\n\n"
        "<!-- not-run: needs a GPU -->\n"
        "```bash\nhmil extract a.svs --device cuda\n```\n\n"
        "- item\n\n"
        "  ```python\n  import hmil\n  ```\n\n"
        "```console\n$ hmil status runs/x \\\n    --json   # all folds\nfold 0 finished\n```\n"
        "```yaml\ntrain: {epochs: 1}\n```\n"
    )
    gpu, nested, console, config = parse_blocks(text, "page.md")
    assert (gpu.line, gpu.lang, gpu.not_run) == (4, "bash", "needs a GPU")
    assert (nested.code, nested.not_run) == ("import hmil\n", None)
    assert shell_commands(console) == [["hmil", "status", "runs/x", "--json"]]
    assert yaml_kind(config) == "config"


def test_every_page_with_examples_is_collected():
    pages = {b.page for b in BLOCKS}
    assert {"README.md", "docs/python-api.md", "docs/tutorial.md", "docs/training.md"} <= pages
    assert RUN_PAGES, "no runnable example found"
    checked = {b.page for b in YAML_EXAMPLES}
    assert {"docs/cli.md", "docs/scaleout.md", "docs/training.md", "docs/tutorial.md"} <= checked
