"""How much of the tissue each colour scale paints hot, against the lesion it should show.

``python -m benchmarks.attention_scale [DEMO_DIR] [--out benchmarks/results/attention_scale]``
predicts every slide of the SYNTHETIC demo cohort (``hmil demo``) with the fold checkpoint
that tested it and, for the true fine label's attention, measures per slide:

* lesion share — the share of the slide's tissue patches covered by the planted lesion (the
  mean lesion-mask coverage of the patches);
* hot share per scale — the share of tissue patches coloured at or above the legend's
  midpoint: ×3.2 on the default relative scale (×1–×10, log; ×10 on the ×1–×100 variant
  measured beside it), the 50th percentile on the percentile scale, the middle of the
  label's min–max on ``raw`` per label;
* in lesion — of those hot patches, the share of their area inside the lesion.

A colouring a pathologist can trust paints about the lesion's share hot, and mostly inside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from hmil.attention_scale import AttentionScale, fit_scales
from hmil.data.bags import infer_patch_size
from hmil.predict import load_checkpoint

#: the scales compared: name → the scale of label k of a level's (K, N) attention
SCALES = {
    "relative ×1–×10 (default)": lambda a, k: fit_scales(a, "relative")[k],
    "relative ×1–×100": lambda a, k: AttentionScale("relative", 1.0, 100.0, "fixed"),
    "percentile": lambda a, k: fit_scales(a, "percentile")[k],
    "raw per label": lambda a, k: fit_scales(a, "raw", per_label=True)[k],
}
MIDPOINT = 0.5


def lesion_coverage(mask: np.ndarray, scale: float, coords: np.ndarray, patch: float) -> np.ndarray:
    """``(N,)`` share of each patch's square covered by the lesion ``mask`` (``(h, w)`` bool at
    ``scale`` level-0 pixels per mask pixel)."""
    out = np.zeros(len(coords))
    for i, (x, y) in enumerate(coords):
        x0, y0 = int(x / scale), int(y / scale)
        x1, y1 = max(x0 + 1, int((x + patch) / scale)), max(y0 + 1, int((y + patch) / scale))
        block = mask[y0:y1, x0:x1]
        out[i] = float(block.mean()) if block.size else 0.0
    return out


def measure(demo: Path) -> list[dict[str, Any]]:
    """One row per slide with a lesion: its lesion share and, per scale, hot share and in-lesion
    share."""
    run = demo / "run"
    predictions = pd.concat(
        [pd.read_csv(f).assign(fold=int(f.parent.name.split("_")[1]))
         for f in sorted(run.glob("fold_*/predictions.csv"))]
    )  # fmt: skip
    predictors: dict[int, Any] = {}
    rows = []
    for _, rec in predictions.drop_duplicates("slide_id").iterrows():
        slide_id, fold = str(rec["slide_id"]), int(rec["fold"])
        mask_file = demo / "masks" / f"{slide_id}_lesion.png"
        if not mask_file.is_file():
            continue
        with Image.open(mask_file) as img:
            mask = np.asarray(img.convert("L")) > 127
        if not mask.any():
            continue
        if fold not in predictors:
            predictors[fold] = load_checkpoint(run / f"fold_{fold}" / "checkpoint.pt", "cpu")
        predictor = predictors[fold]
        pred = predictor.predict(demo / "features" / f"{slide_id}.h5", attention=True)
        names = list(predictor.hierarchy.fine)
        attention = np.asarray(pred.attention["fine"])  # (K, N)
        coords = np.asarray(pred.coords)
        patch = float(infer_patch_size(coords, pred.bag_attrs or {}, slide_id))
        with Image.open(demo / "slides" / f"{slide_id}.tiff") as img:
            width = img.size[0]
        cover = lesion_coverage(mask, width / mask.shape[1], coords, patch)
        k = names.index(str(rec["true_fine"]))
        row: dict[str, Any] = {"slide": slide_id, "n": len(coords), "lesion": float(cover.mean())}
        for title, scale_of in SCALES.items():
            scale = scale_of(attention, k)
            positions = scale.positions(attention[k])
            hot = np.nan_to_num(positions, nan=-1.0) >= MIDPOINT
            coloured = ~np.isnan(positions)
            row[f"{title} hot"] = float(hot.mean())
            row[f"{title} coloured"] = float(coloured.mean())
            row[f"{title} in lesion"] = float(cover[hot].mean()) if hot.any() else float("nan")
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], demo: Path) -> str:
    def med(key: str) -> float:
        values = [r[key] for r in rows if r[key] == r[key]]
        return statistics.median(values) if values else float("nan")

    lines = [
        "# How much tissue each colour scale paints hot (SYNTHETIC demo cohort)",
        "",
        f"`python -m benchmarks.attention_scale {demo}`: {len(rows)} demo slides with a planted "
        "lesion, each predicted by the fold checkpoint that tested it; the true fine label's "
        "attention. Medians over the slides (shares of the slide's tissue patches).",
        "",
        "| scale | coloured at all | hot (≥ legend midpoint) | hot area inside the lesion |",
        "|---|---|---|---|",
    ]
    for title in SCALES:
        lines.append(
            f"| {title} | {med(f'{title} coloured'):.1%} | {med(f'{title} hot'):.1%} | "
            f"{med(f'{title} in lesion'):.0%} |"
        )
    lines += [
        "",
        f"Lesion share of the tissue patches: median {med('lesion'):.1%} "
        f"(range {min(r['lesion'] for r in rows):.1%}–{max(r['lesion'] for r in rows):.1%}).",
        "",
        "* relative: attention × N on a log axis, under ×1 uncoloured; ×1–×10 (midpoint "
        "×3.2) is the viewer's and `hmil heatmap`'s default, ×1–×100 (midpoint ×10) the "
        "variant it was chosen over;",
        "* percentile: rank among the slide's patches, midpoint the 50th percentile (every "
        "patch coloured, half of them hot by construction);",
        "* raw per label: the label's own min–max, midpoint half-way.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", nargs="?", default="hmil-demo", help="hmil demo's folder")
    parser.add_argument("--out", default="benchmarks/results/attention_scale")
    args = parser.parse_args(argv)
    demo = Path(args.demo)
    rows = measure(demo)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    out.with_suffix(".md").write_text(markdown(rows, demo))
    print(markdown(rows, demo))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
