"""``hmil extract``: slides + patch coordinates → one feature bag per slide."""

from __future__ import annotations

import argparse
import sys

from hmil.cli import EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, report
from hmil.cli.flags import add_field_flags, given
from hmil.cli.train import add_launcher_arguments, launcher_from_args
from hmil.config import Config, LauncherConfig
from hmil.slides.extract import ExtractConfig

NAME = "extract"
HELP = "encode the tiled patches of slides into bags (<slide_id>.h5/.pt); resumes finished slides"
#: output arguments, checked before the command runs (hmil.cli.outputs)
OUTPUTS = {"out": "folder"}
#: ExtractConfig field → its flag (``formats`` is set by --format, which also offers "both")
EXTRACT_FLAGS = {
    "batch_size": "--batch-size",
    "precision": "--precision",
    "num_readers": "--readers",
    "prefetch_batches": "--prefetch-batches",
    "torch_threads": "--torch-threads",
    "overwrite": "--overwrite",
}


class _ListEncoders(argparse.Action):
    """``--list-encoders``: print the table and exit (like ``--help``, before required args)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        kwargs.update(nargs=0, default=argparse.SUPPRESS)
        # argparse's stubs type each keyword separately; these are the parser's own
        super().__init__(option_strings, dest, **kwargs)  # type: ignore[arg-type]  # see above

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from hmil.slides.backbones import timm_available
        from hmil.slides.encoders import encoder_table

        source = "timm (installed)" if timm_available() else "hmil's copy (timm not importable)"
        print(f"named encoders' architectures: {source}")
        for row in encoder_table():
            other = row.trident_name not in ("-", *row.name.split(" | "))
            print(row.name + (f"  (TRIDENT: {row.trident_name})" if other else ""))
            print(f"    D = {row.dim}; input: {row.input}")
            print(f"    weights: {row.weights}")
        parser.exit(0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files")
    parser.add_argument(
        "--patches", required=True, help="`hmil tile` output folder or its patches/ subfolder"
    )
    parser.add_argument("--out", required=True, help="bag folder")
    parser.add_argument(
        "--encoder",
        default="hed-texture",
        help="hed-texture (default, weight-free H&E colour + texture, D=104), torchscript, or a "
        "named encoder (resnet50_trunc, uni_v1, uni_v2, conch_v15, virchow2, gigapath, "
        "hoptimus0; see --list-encoders)",
    )
    parser.add_argument(
        "--weights",
        help="local weights: a .pth/.bin/.safetensors state dict or a TorchScript file "
        "(nothing is downloaded)",
    )
    parser.add_argument(
        "--list-encoders",
        action=_ListEncoders,
        help="print every encoder's D, input size, normalisation and weights file, and exit",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument(
        "--backend",
        choices=("auto", "timm", "hmil"),
        default="auto",
        help="architecture of a named encoder: timm's when installed (auto, default) or "
        "hmil's dependency-free copy",
    )
    parser.add_argument(
        "--format",
        choices=("h5", "pt", "both"),
        default="h5",
        help="h5 (default: features, coords, provenance), pt (CLAM's pt_files tensor only) or both",
    )
    extraction = parser.add_argument_group("extraction", "how to extract (ExtractConfig)")
    add_field_flags(extraction, ExtractConfig, EXTRACT_FLAGS, dotted=False, only=EXTRACT_FLAGS)
    parser.add_argument("--strict", action="store_true", help="stop at the first bad slide")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    group = add_launcher_arguments(parser, unit="shard")
    group.add_argument(
        "--shards", type=int, default=1, help="local/slurm: split the slides into K jobs (1)"
    )
    group.add_argument("--config", help="YAML whose launcher: section sets these defaults")


def run(args: argparse.Namespace) -> int:
    from hmil.slides.encoders import create_encoder
    from hmil.slides.extract import extract_slides

    formats = ("h5", "pt") if args.format == "both" else (args.format,)
    config = ExtractConfig(formats=formats, **given(args, {name: name for name in EXTRACT_FLAGS}))
    launcher = launcher_from_args(
        args, Config.from_file(args.config).launcher if args.config else LauncherConfig()
    )
    if launcher.kind != "inline":
        return run_sharded(args, config, launcher)
    encoder = create_encoder(args.encoder, args.weights, args.device, backend=args.backend)
    result = extract_slides(
        args.slides,
        args.patches,
        args.out,
        encoder,
        config,
        strict=args.strict,
        on_error=report,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        progress=not args.quiet,
    )
    print(
        f"{args.out}: {len(result.done)} extracted, {len(result.skipped)} already there, "
        f"{len(result.failed)} skipped with errors",
        file=sys.stderr,
    )
    if result.failed and not (result.done or result.skipped):
        return EXIT_USAGE
    return EXIT_SKIPPED if result.failed else EXIT_OK


def run_sharded(args: argparse.Namespace, config: ExtractConfig, launcher: LauncherConfig) -> int:
    """``--launcher local|slurm``: the slides still missing bags as ``--shards`` jobs."""
    from hmil.launch import launch_extraction

    launch = launch_extraction(
        args.slides, args.patches, args.out, launcher=launcher, shards=args.shards,
        encoder=args.encoder, weights=args.weights, device=args.device, config=config,
        strict=args.strict, detach=args.detach, on_line=None if args.quiet else _line,
    )  # fmt: skip
    if launch.results is None:
        for sub in launch.submitted:
            print(f"shard {sub.index}: {launcher.kind} job {sub.job_id} ({sub.n_slides} slides), "
                  f"log {sub.stderr}")  # fmt: skip
        return EXIT_OK
    failed = [item for result in launch.results for item in result.failed]
    failed += [(f"shard {index}", problem) for index, problem in launch.failed_shards]
    for where, problem in failed:
        report(where, problem)
    done = sum(len(r.done) for r in launch.results)
    already = len(launch.already) + sum(len(r.skipped) for r in launch.results)
    print(
        f"{args.out}: {done} extracted, {already} already there, {len(failed)} skipped with errors",
        file=sys.stderr,
    )
    if failed and not (done or already):
        return EXIT_USAGE
    return EXIT_SKIPPED if failed else EXIT_OK


def _line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
