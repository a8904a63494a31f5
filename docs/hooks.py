"""MkDocs hooks: the pages that are generated at build time instead of written by hand.

Why generated: a reference that is copied by hand drifts from the code. So

* ``cli.md`` is the handwritten overview in ``docs/cli.md`` (a table of the commands, readable on
  a Git host too) followed by every command's ``--help``, rendered from
  ``hmil.cli.build_parser()`` (argparse is the single source of the flags);
* ``api/…`` has one page per public module of ``hmil``, found by walking the package, so a new
  module is documented (and its docstrings rendered by mkdocstrings) without editing the nav;
* the repository's own Markdown outside ``docs/`` (``README.md``, ``benchmarks/README.md``, the
  benchmark results and plots, the demo model card) is mounted at the same relative paths, so
  the links between those files keep working and ``mkdocs build --strict`` checks them
  (``CHANGELOG.md`` too); the root pages' links into ``docs/`` and to each other are rewritten
  to the site's paths, so ``README.md`` links the same pages on a Git host and in the site;
* ``formats.md`` is a copy of the project contract; when ``../shared/CONTRACT.md`` is present
  and differs, the build warns (and ``--strict`` fails) until it is copied again with
  ``python docs/hooks.py --sync-formats``.

``python docs/hooks.py --cli`` prints the CLI reference without building the site.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONTRACT = ROOT.parent / "shared" / "CONTRACT.md"
FORMATS = DOCS / "formats.md"
#: everything in formats.md after this line is the contract, verbatim
CONTRACT_MARKER = "<!-- contract: everything below is ../shared/CONTRACT.md, verbatim -->"
#: the handwritten head of the CLI page; the generated ``--help`` of every command follows it
CLI_PAGE = DOCS / "cli.md"

#: repository files (glob, relative to ROOT) published at the same path in the site
MOUNTED = (
    "benchmarks/README.md",
    "benchmarks/results/*.md",
    "benchmarks/results/*/*.md",
    "benchmarks/results/*.png",
    "checkpoints/demo/MODEL_CARD.md",
)
#: root files published as these pages (their links into docs/ are rewritten)
ROOT_PAGES = {"README.md": "readme.md", "CHANGELOG.md": "changelog.md"}

#: modules left out of the API reference: the CLI has its own generated page
API_SKIP = ("hmil.cli", "hmil.__main__")

#: help is wrapped at this width, whatever the terminal that builds the site
HELP_COLUMNS = "100"


# --------------------------------------------------------------------------- CLI reference


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-command parsers of ``parser`` in registry order (argparse keeps them privately)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_help_markdown() -> str:
    """Each ``hmil`` command's ``--help``, exactly as argparse prints it, one section each."""
    os.environ["COLUMNS"] = HELP_COLUMNS
    sys.path.insert(0, str(ROOT))
    from hmil.cli import build_parser

    parser = build_parser()
    parser.prog = "hmil"
    parts = ["## hmil", "", "```text", parser.format_help().rstrip(), "```"]
    for name, sub in _subcommands(parser).items():
        parts += ["", f"## hmil {name}", "", "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(parts) + "\n"


def cli_markdown() -> str:
    """The CLI reference page: the overview of ``docs/cli.md``, then :func:`cli_help_markdown`."""
    overview = CLI_PAGE.read_text(encoding="utf-8").rstrip("\n")
    return overview + "\n\n" + cli_help_markdown()


# --------------------------------------------------------------------------- API reference


def api_modules(package_dir: Path = ROOT / "hmil") -> list[str]:
    """Dotted names of the public modules and packages under ``package_dir``, sorted.

    Public: no path component starts with ``_`` (``__init__.py`` stands for its package).
    """
    names = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts):
            continue
        name = ".".join(parts)
        if any(name == s or name.startswith(s + ".") for s in API_SKIP):
            continue
        names.append(name)
    return names


def api_page_uri(module: str) -> str:
    """Where the page of ``module`` lives (``hmil.data.bags`` → ``api/data/bags.md``)."""
    parts = module.split(".")[1:]
    return "api/" + ("/".join(parts) if parts else "hmil") + ".md"


def api_page(module: str) -> str:
    """The Markdown of one API page: the module's docstring and members, via mkdocstrings."""
    return f"# `{module}`\n\n::: {module}\n"


def api_nav(modules: list[str]) -> list[Any]:
    """Nav entries for the API pages: the package, its modules, then a section per subpackage."""
    packages = {m for m in modules for other in modules if other.startswith(m + ".")}
    nav: list[Any] = []
    sections: dict[str, list[Any]] = {}
    for module in modules:
        parts = module.split(".")
        if module == "hmil":
            nav.insert(0, {"hmil (public API)": api_page_uri(module)})
        elif len(parts) == 2 and module not in packages:
            nav.append({module: api_page_uri(module)})
        else:
            sections.setdefault(".".join(parts[:2]), []).append({module: api_page_uri(module)})
    return nav + [{top: entries} for top, entries in sections.items()]


# --------------------------------------------------------------------------- contract copy


def contract_text_in_docs() -> str:
    """The contract part of ``docs/formats.md`` (after :data:`CONTRACT_MARKER`)."""
    text = FORMATS.read_text(encoding="utf-8")
    _, sep, body = text.partition(CONTRACT_MARKER + "\n")
    if not sep:
        raise ValueError(f"{FORMATS}: the line {CONTRACT_MARKER!r} is missing")
    return body.lstrip("\n")


def sync_formats() -> bool:
    """Copy ``../shared/CONTRACT.md`` into ``docs/formats.md``; True when something changed."""
    text = FORMATS.read_text(encoding="utf-8")
    head, _, _ = text.partition(CONTRACT_MARKER + "\n")
    new = head + CONTRACT_MARKER + "\n\n" + CONTRACT.read_text(encoding="utf-8")
    if new == text:
        return False
    FORMATS.write_text(new, encoding="utf-8")
    return True


# --------------------------------------------------------------------------- MkDocs events


def _log() -> Any:
    from mkdocs.plugins import get_plugin_logger

    return get_plugin_logger("hmil-docs")


def on_config(config: Any) -> Any:
    """Add the generated API pages and the mounted benchmark results to the nav."""
    nav = config["nav"] or []
    for entry in nav:
        if isinstance(entry, dict) and "API reference" in entry:
            entry["API reference"] = api_nav(api_modules())
        if isinstance(entry, dict) and "Benchmarks" in entry:
            results = sorted(
                p.relative_to(ROOT).as_posix()
                for pattern in ("benchmarks/results/*.md", "benchmarks/results/*/*.md")
                for p in ROOT.glob(pattern)
            )
            entry["Benchmarks"] = [{"Overview": "benchmarks/README.md"}] + [
                {Path(r).stem.replace("_", " "): r} for r in results
            ]
    return config


def on_files(files: Any, config: Any) -> Any:
    """Generate the CLI and API pages; mount the repository's Markdown from outside docs/."""
    from mkdocs.structure.files import File

    handwritten = files.get_file_from_path("cli.md")
    if handwritten is not None:
        files.remove(handwritten)  # replaced by the page with the generated --help appended
    files.append(File.generated(config, "cli.md", content=cli_markdown()))
    for module in api_modules():
        files.append(File.generated(config, api_page_uri(module), content=api_page(module)))
    for pattern in MOUNTED:
        for path in sorted(ROOT.glob(pattern)):
            uri = path.relative_to(ROOT).as_posix()
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    for name, uri in ROOT_PAGES.items():
        files.append(File.generated(config, uri, abs_src_path=str(ROOT / name)))
    if CONTRACT.is_file() and contract_text_in_docs() != CONTRACT.read_text(encoding="utf-8"):
        _log().warning(
            "docs/formats.md differs from ../shared/CONTRACT.md (the source); "
            "run: python docs/hooks.py --sync-formats"
        )
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Root files link relative to the repository root: point their ``docs/…`` into the site."""
    if page.file.src_uri in ROOT_PAGES.values():
        markdown = re.sub(r"\]\(docs/", "](", markdown)
        for name, uri in ROOT_PAGES.items():
            markdown = re.sub(rf"\]\({re.escape(name)}(?=[)#])", f"]({uri}", markdown)
    return markdown


#: Sphinx roles in docstrings (``:func:`x```) — Markdown shows them raw; keep just the code
_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):(<code>)")


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """Drop the Sphinx role prefixes that docstrings use for cross-references."""
    return _ROLE.sub(r"\1", html)


def main(argv: list[str] | None = None) -> int:
    """``--cli`` prints the CLI page; ``--sync-formats`` copies the contract into formats.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--cli", action="store_true", help="print the CLI reference Markdown")
    group.add_argument("--sync-formats", action="store_true", help="copy the contract again")
    args = parser.parse_args(argv)
    if args.cli:
        sys.stdout.write(cli_markdown())
        return 0
    if not CONTRACT.is_file():
        print(f"error: {CONTRACT}: not found", file=sys.stderr)
        return 2
    print("docs/formats.md " + ("updated" if sync_formats() else "already matches the contract"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
