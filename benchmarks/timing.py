"""Training time of every compared row of the accuracy tables, measured under one load.

The accuracy runs (``benchmarks/accuracy.py``) were spread over days and several of them shared
the machine with other jobs, so their own wall times cannot be compared across rows. This
script times the rows that the README compares, per cohort, in one process, one after the
other, with one torch thread: the HMIL defaults, the ``paper`` and ``released`` presets and
every flat peer under its plain recipe and under the HMIL defaults' recipe.

Each row is trained twice on seed 0 of the cohort, for ``--short`` and for ``--long`` epochs,
through the same code as the accuracy table (``run_hmil`` / ``run_peer``: train, select, score
the test part). The difference gives the seconds per epoch; the rest is the fixed cost
(building the model and data, validation at the end, the test part). The time of a row at a
budget is ``fixed + per_epoch × epochs``: the table's budget, and for the presets also their
own (200 epochs). Rows that only change a loss term or the schedule of the defaults cost what
the defaults cost per epoch.

Usage (from the repository root)::

    python -m benchmarks.timing                      # all five cohorts (about 10 min idle)
    python -m benchmarks.timing --cohorts gen-small --load-note "nothing else ran"
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.accuracy import (
    COHORT_EPOCHS,
    HMIL_DEFAULT,
    HMIL_PAPER,
    HMIL_RELEASED,
    VARIANTS,
    Variant,
    prepare_cohort,
    run_hmil,
    run_peer,
)
from benchmarks.cohorts import COHORTS
from benchmarks.common import RESULTS, machine, machine_line, option_names, write_json
from benchmarks.peers import TrainSettings
from hmil.config import Config

#: the rows the README compares: the defaults, the two presets, every peer in both recipes
TIMED_ROWS: tuple[str, ...] = (
    HMIL_DEFAULT,
    HMIL_PAPER,
    HMIL_RELEASED,
    *(v.name for v in VARIANTS if v.kind == "peer" and v.peer != "flat_gated"),
)
DEFAULT_EPOCHS = 20


def own_budget(variant: Variant) -> int | None:
    """The epochs a preset row names for itself (the paper's 200), or ``None``."""
    return Config.from_preset(variant.preset).train.epochs if variant.preset else None


def time_row(prepared: Any, variant: Variant, epochs: int, work: Path) -> float:
    """Wall seconds of one training run of ``variant`` at ``epochs`` (train, select, score)."""
    run = run_hmil if variant.kind == "hmil" else run_peer
    run_dir = work / "runs" / f"{prepared.cohort}-{VARIANTS.index(variant)}-e{epochs}"
    t0 = time.perf_counter()
    run(prepared, variant, TrainSettings(epochs=epochs, seed=prepared.seed), run_dir)
    seconds = time.perf_counter() - t0
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.parent.joinpath(f"{run_dir.name}-probs.npz").unlink(missing_ok=True)
    return seconds


def split_cost(t_short: float, t_long: float, short: int, long: int) -> tuple[float, float]:
    """``(fixed_s, per_epoch_s)`` from two runs of ``short`` and ``long`` epochs.

    >>> split_cost(12.0, 30.0, 1, 4)
    (6.0, 6.0)
    """
    per_epoch = max(t_long - t_short, 0.0) / (long - short)
    return max(t_short - per_epoch * short, 0.0), per_epoch


def measure_cohort(
    cohort: str,
    short: int,
    long: int,
    work: Path,
    rows: tuple[str, ...] = TIMED_ROWS,
    quick: bool = False,
) -> list[dict[str, Any]]:
    """One record per timed row of ``cohort`` (seed 0; ``quick``: a few bags per class)."""
    prepared = prepare_cohort(cohort, 0, work, (0.15, 0.3), quick=quick)
    budget = COHORT_EPOCHS.get(cohort, DEFAULT_EPOCHS)
    by_name = {v.name: v for v in VARIANTS}
    records = []
    for name in rows:
        variant = by_name[name]
        load_before = os.getloadavg()[0]
        t_short = time_row(prepared, variant, short, work)
        t_long = time_row(prepared, variant, long, work)
        fixed, per_epoch = split_cost(t_short, t_long, short, long)
        record: dict[str, Any] = {
            "cohort": cohort,
            "variant": name,
            "short_epochs": short,
            "long_epochs": long,
            "short_s": round(t_short, 2),
            "long_s": round(t_long, 2),
            "fixed_s": round(fixed, 2),
            "per_epoch_s": round(per_epoch, 3),
            "budget_epochs": budget,
            "budget_s": round(fixed + per_epoch * budget, 1),
            "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
        own = own_budget(variant)
        if own is not None and own != budget:
            record["own_epochs"] = own
            record["own_budget_s"] = round(fixed + per_epoch * own, 1)
        records.append(record)
        print(f"{cohort} {name}: {per_epoch:.2f} s/epoch, fixed {fixed:.1f} s, "
              f"{record['budget_s']:.0f} s at {budget} epochs", flush=True)  # fmt: skip
    return records


def markdown(records: list[dict[str, Any]], info: dict[str, Any]) -> str:
    """The timing tables, one per cohort."""
    lines = [
        "# Training time of the compared rows, under one load",
        "",
        machine_line(info),
        "",
        f"Load: {info.get('load') or 'not stated'}. All rows below ran in one process, one "
        "after the other, torch threads 1; the 1-minute load average before each row is in "
        "`timing.json`.",
        "",
        "Seed 0 of each cohort (SYNTHETIC bags, `benchmarks/cohorts.py`), each row trained "
        "twice through the accuracy table's code (train, select, score the test part), for "
        f"{records[0]['short_epochs']} and {records[0]['long_epochs']} epochs: seconds per "
        "epoch from the difference, the rest is the fixed cost. One training run at the "
        "table's budget = fixed + per epoch × epochs; the presets also at their own budget. "
        "The accuracy tables' rows that change only a loss term, the schedule or the weight "
        "average of the defaults cost what the defaults cost per epoch.",
        "",
    ]
    for cohort in dict.fromkeys(r["cohort"] for r in records):
        rows = [r for r in records if r["cohort"] == cohort]
        lines += [
            f"## {cohort}",
            "",
            "| model | s per epoch | fixed s | s per run at the table's "
            f"{rows[0]['budget_epochs']} epochs | s per run at the preset's own budget |",
            "|---|---|---|---|---|",
        ]
        for r in rows:
            own = (f"{r['own_budget_s']:.0f} ({r['own_epochs']} epochs)"
                   if "own_budget_s" in r else "–")  # fmt: skip
            lines.append(f"| {r['variant']} | {r['per_epoch_s']:.2f} | {r['fixed_s']:.1f} | "
                         f"{r['budget_s']:.0f} | {own} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cohorts", default=",".join(COHORTS), help="comma-separated cohort names")
    p.add_argument("--short", type=int, default=1, help="epochs of the short run")
    p.add_argument("--long", type=int, default=3, help="epochs of the long run")
    p.add_argument("--work", default="/tmp/hmil-bench-timing", help="scratch directory")
    p.add_argument("--out", default=str(RESULTS), help="where <tag>.{json,md} go")
    p.add_argument("--tag", default="timing", help="result file stem")
    p.add_argument("--load-note", default="", help="what else ran on the machine meanwhile")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: a few bags per class, the defaults and one peer")  # fmt: skip
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cohorts = option_names(args.cohorts)
    unknown = [c for c in cohorts if c not in COHORTS]
    if unknown:
        print(f"error: --cohorts: unknown {unknown} (known: {', '.join(COHORTS)})",
              file=sys.stderr)  # fmt: skip
        return 2
    if not 0 < args.short < args.long:
        print("error: --short/--long: need 0 < short < long", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = (HMIL_DEFAULT, TIMED_ROWS[3]) if args.quick else TIMED_ROWS
    records: list[dict[str, Any]] = []
    for cohort in cohorts:
        records += measure_cohort(cohort, args.short, args.long, work, rows, args.quick)
    info = machine()
    if args.load_note:
        info["load"] = args.load_note
    out = Path(args.out)
    write_json(out / f"{args.tag}.json", {"machine": info, "rows": records})
    (out / f"{args.tag}.md").write_text(
        markdown(records, info).rstrip("\n") + "\n", encoding="utf-8"
    )
    print(f"wrote {out / args.tag}.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
