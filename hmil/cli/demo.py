"""``hmil demo``: build the SYNTHETIC demo cohort, run the real pipeline on it, say how to view."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from hmil.cli import EXIT_OK, EXIT_SKIPPED
from hmil.demo.defaults import EPOCHS, FOLDS, N_SLIDES
from hmil.device import DEVICE_CHOICES

NAME = "demo"
HELP = (
    "build a small SYNTHETIC slide cohort and run tile → extract → split → train → evaluate "
    "on it (reruns reuse finished steps)"
)
#: output arguments, checked before the command runs (hmil.cli.outputs)
OUTPUTS = {"out": "folder"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="hmil-demo", help="demo directory (default: ./hmil-demo)")
    parser.add_argument(
        "--slides", type=int, default=N_SLIDES, help=f"synthetic slides (default {N_SLIDES})"
    )
    parser.add_argument(
        "--folds", type=int, default=FOLDS, help=f"cross-validation folds (default {FOLDS})"
    )
    parser.add_argument(
        "--epochs", type=int, default=EPOCHS, help=f"epochs per fold (default {EPOCHS})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data and training (default 0)")
    parser.add_argument(
        "--device", default="auto", help=f"{', '.join(DEVICE_CHOICES)} (default auto: CUDA if any)"
    )
    parser.add_argument(
        "--slide-size",
        type=int,
        default=4096,
        help="largest level-0 side of a slide in px; sides range over 3/4 of it up to it "
        "(default 4096)",
    )
    parser.add_argument(
        "--workers", type=int, help="processes generating and tiling slides (default: up to 2)"
    )
    parser.add_argument(
        "--update-checkpoint",
        action="store_true",
        help="copy the best fold (on validation) to checkpoints/demo/ with a model card",
    )
    parser.add_argument(
        "--checkpoint-dir",
        help="where --update-checkpoint writes (default: checkpoints/demo of this checkout)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from hmil.demo.model_card import default_checkpoint_dir, update_demo_checkpoint
    from hmil.demo.pipeline import DemoConfig, run_demo

    config = DemoConfig(
        out=Path(args.out),
        n_slides=args.slides,
        folds=args.folds,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        workers=args.workers,
        min_size=max(512, args.slide_size * 3 // 4 // 256 * 256),
        max_size=args.slide_size,
    )
    result = run_demo(config, progress=not args.quiet)
    summary = result.summary
    for level in ("coarse", "fine"):
        stats = summary.get(level, {})
        parts = [
            f"{name} {stats[name]['mean']:.3f} ± {stats[name]['std']:.3f}"
            for name in ("balanced_accuracy", "macro_auc")
            if name in stats
        ]
        if parts:
            print(f"test {level}: " + ", ".join(parts) + f" over {summary.get('n_folds', 0)} folds")
    total = sum(result.seconds.values())
    steps = ", ".join(f"{step} {secs:g}s" for step, secs in result.seconds.items())
    print(f"time: {total:.0f}s ({steps})")
    if args.update_checkpoint:
        dest = Path(args.checkpoint_dir) if args.checkpoint_dir else default_checkpoint_dir()
        target = update_demo_checkpoint(result, dest, command=_command(args))
        print(f"demo checkpoint: {target} (model card: {target.parent / 'MODEL_CARD.md'})")
    print("All data in this demo is SYNTHETIC. To look at it:")
    print(f"  hmil view {shlex.quote(str(result.run_dir))}")
    return EXIT_SKIPPED if result.skipped else EXIT_OK


def _command(args: argparse.Namespace) -> str:
    """The canonical command line that reproduces this demo (for the model card)."""
    parts = [
        "hmil demo", f"--out {shlex.quote(str(args.out))}", f"--slides {args.slides}",
        f"--folds {args.folds}", f"--epochs {args.epochs}", f"--seed {args.seed}",
        f"--device {args.device}", f"--slide-size {args.slide_size}", "--update-checkpoint",
    ]  # fmt: skip
    return " ".join(parts)
