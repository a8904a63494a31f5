"""The ``hmil`` command: a thin argparse front-end over the library.

Each sub-command lives in its own module of this package and exposes ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``, and may declare ``OUTPUTS`` (argument →
``folder``/``file``, checked before it runs, see :mod:`hmil.cli.outputs`); :data:`COMMANDS` is
the registry. The dispatcher below is the only place that turns exceptions into exit codes:

* :class:`hmil.errors.HMILError` → one line ``error: <where>: <problem>`` on stderr, exit 2;
  a ``where`` that names a parameter of the command (``train.epochs``, ``device``) is shown as
  its flag (``--epochs``, ``--device``): the library names parameters, never flags;
* an OS-level failure (disk full, permission denied, read-only file system, a path through a
  file) → one such line too, exit 2; atomic writes leave nothing half-written behind;
* a command over many items returns 3 itself when it skipped items it reported;
* Ctrl-C → exit 130 without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hmil.cli.flags import flag_names, flag_where
from hmil.errors import HMILError

#: sub-command name -> module (imported lazily so ``hmil --help`` stays fast)
COMMANDS: dict[str, str] = {
    "demo": "hmil.cli.demo",
    "tile": "hmil.cli.tile",
    "extract": "hmil.cli.extract",
    "split": "hmil.cli.split",
    "train": "hmil.cli.train",
    "evaluate": "hmil.cli.evaluate",
    "predict": "hmil.cli.predict",
    "heatmap": "hmil.cli.heatmap",
    "view": "hmil.cli.view",
    "status": "hmil.cli.status",
    "reviews": "hmil.cli.reviews",
    "export": "hmil.cli.export",
    "regions": "hmil.cli.regions",
}

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SKIPPED = 3


def build_parser() -> argparse.ArgumentParser:
    """The ``hmil`` parser with one sub-parser per registered command (the docs render it)."""
    parser = argparse.ArgumentParser(
        prog="hmil",
        description="HMIL Studio: hierarchical multiple-instance learning on whole-slide images.",
    )
    from hmil.version import __version__

    parser.add_argument("--version", action="version", version=f"hmil {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a command whose module is not written yet
            if exc.name != module_name:
                raise
            continue
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run, _outputs=getattr(module, "OUTPUTS", {}))
        cmd.set_defaults(_flags=flag_names(cmd))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``hmil`` command; its exit code (HMILError → one ``error:`` line, exit 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from hmil.cli.outputs import check_outputs, os_error_problem, sweep_outputs

    try:
        check_outputs(args, args._outputs)
        sweep_outputs(args, args._outputs)
        return int(args._run(args))
    except HMILError as exc:
        # the library names the parameter (train.epochs); the user knows it by its flag
        where = flag_where(exc, args._flags, sys.argv[1:] if argv is None else argv)
        print(f"error: {where}: {exc.problem}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, RuntimeError) as exc:
        found = os_error_problem(exc)
        if found is None:
            raise  # a genuine bug: keep the traceback
        where, problem = found
        print(f"error: {where or getattr(args, 'out', None) or args.command}: {problem}",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def report(where: object, problem: str) -> None:
    """Print one ``error: <where>: <problem>`` line (for items a batch command skips)."""
    print(f"error: {where}: {problem}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
