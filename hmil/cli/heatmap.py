"""``hmil heatmap``: class-wise attention of a checkpoint on one bag → PNG, GeoJSON, crops."""

from __future__ import annotations

import argparse
import sys

from hmil.cli import EXIT_OK
from hmil.cli.flags import add_field_flags, given
from hmil.overlay import HeatmapStyle

NAME = "heatmap"
HELP = "draw one class's attention over the slide (PNG), export QuPath GeoJSON and top-k crops"
#: HeatmapStyle's fields, each set by the flag of its name (--alpha, --per-label)
STYLE_FIELDS = ("cmap", "alpha", "normalize", "smooth", "per_label")
#: output arguments, checked before the command runs (hmil.cli.outputs)
OUTPUTS = {"out": "file", "geojson": "file", "crops": "folder"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt")
    parser.add_argument("--bag", required=True, help="the slide's bag (.h5/.pt with coords)")
    parser.add_argument(
        "--slide",
        help="draw over this slide (default: blank canvas); refused when the bag records another "
        "slide (name, level-0 size, MPP) or its coords reach outside this one",
    )
    parser.add_argument(
        "--allow-slide-mismatch",
        action="store_true",
        help="the slide file was renamed: draw anyway when the bag records another slide "
        "(a warning is printed)",
    )
    parser.add_argument("--level", choices=("coarse", "fine"), required=True, help="label level")
    parser.add_argument("--label", required=True, help="class whose attention is drawn")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--geojson", help="also write QuPath GeoJSON (one detection per patch)")
    parser.add_argument(
        "--max-size", type=int, default=2048, help="longer side of the PNG in pixels (2048)"
    )
    style = parser.add_argument_group("style", "how attention becomes colours (HeatmapStyle)")
    add_field_flags(style, HeatmapStyle, dotted=False, defaults=True, only=STYLE_FIELDS)
    parser.add_argument(
        "--no-legend",
        action="store_true",
        help="leave out the colour bar drawn in the PNG's lower-left corner",
    )
    parser.add_argument("--topk", type=int, default=0, help="crop the K top patches per class")
    parser.add_argument("--crops", help="folder for the crops (with --topk, needs --slide)")
    parser.add_argument(
        "--patch-size",
        type=float,
        help="level-0 patch size (default: from the bag's attributes or coordinate grid)",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from hmil.data.bags import level0_coords
    from hmil.errors import BagError, ConfigError, SlideError
    from hmil.heatmap import MISMATCH_HINT, check_patch_size, export_heatmap
    from hmil.predict import load_checkpoint
    from hmil.slides import open_slide
    from hmil.slides.match import check_bag_on_slide

    style = HeatmapStyle(**given(args, {name: name for name in STYLE_FIELDS}))
    if args.topk > 0 and not (args.slide and args.crops):
        raise ConfigError("--topk", "needs --slide and --crops DIR (crops are cut from the slide)")
    if args.patch_size is not None:
        check_patch_size(args.patch_size)
    predictor = load_checkpoint(args.checkpoint, device=args.device)
    names = getattr(predictor.hierarchy, args.level)
    if args.label not in names:
        raise ConfigError(
            "--label",
            f"'{args.label}' is not a {args.level} class of this checkpoint "
            f"(choose from: {', '.join(names)})",
        )
    pred = predictor.predict(args.bag, attention=True)
    for warning in pred.warnings:  # e.g. features of another encoder than the checkpoint's
        print(f"warning: {args.bag}: {warning}", file=sys.stderr, flush=True)
    if pred.coords is None:
        raise BagError(args.bag, "bag has no coords; heatmaps need patch coordinates")
    rows = pred.attention[args.level] if pred.attention else None
    if rows is None:
        raise BagError(args.bag, "the model returned no attention")
    attention = {name: rows[i] for i, name in enumerate(names)}
    # grid-unit coords (torchmil's 0, 1, 2, ...) are scaled by --patch-size, refused without it
    coords, patch_size = level0_coords(pred.coords, pred.bag_attrs, args.patch_size, args.bag)
    slide = open_slide(args.slide) if args.slide else None
    try:
        if slide is not None and args.allow_slide_mismatch:
            match = check_bag_on_slide(pred.bag_attrs, coords, slide, allow_mismatch=True)
            if match.problem is not None:
                print(f"warning: {slide.path}: {match.problem}", file=sys.stderr, flush=True)
        outputs = export_heatmap(
            attention,
            args.label,
            coords,
            patch_size,
            args.out,
            slide=slide,
            geojson=args.geojson,
            crops_dir=args.crops,
            topk=args.topk,
            max_size=args.max_size,
            style=style,
            bag_attrs=pred.bag_attrs,
            allow_slide_mismatch=args.allow_slide_mismatch,
            legend=not args.no_legend,
            hierarchy=predictor.hierarchy,
        )
    except SlideError as exc:  # the library's hint names parameters; here they are flags
        if not exc.problem.endswith(MISMATCH_HINT):
            raise
        hint = " (wrong --slide? --allow-slide-mismatch draws it anyway)"
        raise SlideError(exc.where, exc.problem.removesuffix(MISMATCH_HINT) + hint) from None
    finally:
        if slide is not None:
            slide.close()
    print(
        f"{outputs.png}: {args.level} '{args.label}' attention of {pred.n_instances} patches "
        f"(patch {patch_size:g}px at level 0)",
        file=sys.stderr,
    )
    if outputs.geojson is not None:
        print(f"{outputs.geojson}: {pred.n_instances} detections", file=sys.stderr)
    for name, paths in (outputs.crops or {}).items():
        print(f"{args.crops}: {len(paths)} crops for '{name}'", file=sys.stderr)
    return EXIT_OK
