"""The documentation site: its generated pages, the contract copy, and a strict offline build."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hmil.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]


def _load_hooks():
    spec = importlib.util.spec_from_file_location("hmil_docs_hooks", REPO / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load_hooks()


def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )


def _flatten(nav) -> list[str]:
    out: list[str] = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        out += _flatten(value) if isinstance(value, list) else [value]
    return out


def test_cli_reference_is_every_commands_help():
    page = hooks.cli_markdown()
    for name in COMMANDS:
        assert f"\n## hmil {name}\n" in page
        assert f"usage: hmil {name}" in page
    # flags come from argparse itself, not from a hand-kept list
    assert "--print-config" in page and "--max-upload-mb" in page
    assert max(len(line) for line in page.splitlines() if not line.startswith("|")) <= 100


def test_api_pages_cover_each_public_module_once():
    modules = hooks.api_modules()
    assert {"hmil", "hmil.data.bags", "hmil.data.splits", "hmil.checkpoint", "hmil.heatmap"} <= set(
        modules
    )
    assert not [m for m in modules if m.startswith("hmil.cli") or "._" in m or m.endswith("__")]
    pages = _flatten(hooks.api_nav(modules))
    assert sorted(pages) == sorted(hooks.api_page_uri(m) for m in modules)
    assert len(set(pages)) == len(pages)
    assert hooks.api_page("hmil.data.bags") == "# `hmil.data.bags`\n\n::: hmil.data.bags\n"


@pytest.mark.skipif(not hooks.CONTRACT.is_file(), reason="../shared/CONTRACT.md not present")
def test_formats_page_is_the_contract_verbatim():
    assert hooks.contract_text_in_docs() == hooks.CONTRACT.read_text(encoding="utf-8")


def test_sync_formats_copies_the_contract_under_the_note(tmp_path, monkeypatch):
    formats, contract = tmp_path / "formats.md", tmp_path / "CONTRACT.md"
    formats.write_text(f"# File formats\n\nnote\n\n{hooks.CONTRACT_MARKER}\n\nold text\n")
    contract.write_text("# The contract\n\nnew text\n")
    monkeypatch.setattr(hooks, "FORMATS", formats)
    monkeypatch.setattr(hooks, "CONTRACT", contract)
    assert hooks.sync_formats() is True
    assert formats.read_text().startswith("# File formats\n\nnote\n\n")
    assert hooks.contract_text_in_docs() == "# The contract\n\nnew text\n"
    assert hooks.sync_formats() is False


def test_a_broken_link_or_anchor_fails_the_strict_build(tmp_path):
    """The project's validation settings, on two tiny pages (no API rendering: seconds)."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[ok](other.md#there)\n")
    (docs / "other.md").write_text("# Other\n\n## There\n")
    small = {
        "site_name": "probe",
        "docs_dir": str(docs),
        "strict": True,
        "validation": config["validation"],
        "nav": ["index.md", "other.md"],
    }
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(small))
    assert _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site").returncode == 0

    (docs / "index.md").write_text("# Home\n\n[gone](missing.md)\n")
    proc = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0 and "missing.md" in proc.stderr

    (docs / "index.md").write_text("# Home\n\n[no anchor](other.md#nowhere)\n")
    proc = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0 and "nowhere" in proc.stderr


@pytest.mark.parametrize(
    ("path", "flagged"),
    [("hmil/probe.py", True), ("hmil/cli/probe.py", False), ("viewer/probe.py", False)],
)
def test_a_public_function_without_docstring_fails_lint(path, flagged):
    proc = subprocess.run(
        [Path(sys.executable).parent / "ruff", "check", "--stdin-filename", path, "-"],
        input='"""Module."""\n\n\ndef public(x: int) -> int:\n    return x\n',
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ("D103" in proc.stdout) is flagged
    assert (proc.returncode != 0) is flagged


@pytest.mark.slow
def test_site_builds_strict_and_offline(tmp_path):
    """The real site: every page, the generated CLI/API pages, the mounted benchmark results."""
    proc = _mkdocs(REPO / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode == 0, proc.stderr[-3000:]
    site = tmp_path / "site"
    cli = (site / "cli.html").read_text()
    assert "usage: hmil train" in cli and "--print-config" in cli
    bags = (site / "api" / "data" / "bags.html").read_text()
    assert "load_bag" in bags and "CLAM" in bags  # the module docstring rendered
    launch = (site / "api" / "launch.html").read_text()
    assert "launch_training" in launch and ":func:" not in launch  # Sphinx roles dropped
    for page in ("formats.html", "tutorial.html", "method.html", "changelog.html", "readme.html"):
        assert (site / page).is_file(), page
    assert (site / "benchmarks" / "results" / "accuracy.html").is_file()
    assert (site / "benchmarks" / "index.html").is_file()
    # nothing in the built pages points at a web font or CDN: it reads offline
    assert "fonts.googleapis" not in (site / "index.html").read_text()
