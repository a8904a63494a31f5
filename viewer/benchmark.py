"""Time the slide page on a run: first render, label/level switch, zoom and pan steps.

``python -m viewer.benchmark [RUN] [--repeat N]`` (default: the demo run). Each step is one
full script run through ``streamlit.testing.v1.AppTest`` — the same code path as a browser
interaction minus the network and the browser's drawing. Heavy modules (torch, OpenSlide) are
imported first and reported apart, so "first render" is what a new visitor of a running viewer
waits for (model, prediction, slide and thumbnail caches all cold), and the cold-process time
is ``imports + first render``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

APP = Path(__file__).resolve().parent / "app.py"


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_benchmark(run: Path, repeat: int = 3) -> dict[str, Any]:
    """Timings in seconds: ``imports``, ``first_render``, ``second_slide_first_render`` and
    lists for ``label_switch``, ``level_switch``, ``zoom_step``, ``pan_step``."""
    t0 = time.perf_counter()
    import openslide  # noqa: F401
    import plotly.graph_objects  # noqa: F401
    import torch  # noqa: F401
    from streamlit.testing.v1 import AppTest

    import hmil.heatmap
    import hmil.predict  # noqa: F401

    imports = time.perf_counter() - t0  # the viewer's own modules load in the first render
    os.environ["HMIL_VIEW_RUN"] = str(run)
    at = AppTest.from_file(str(APP), default_timeout=300)

    def check() -> None:
        if at.exception:
            raise RuntimeError(at.exception[0].value)

    first = _timed(at.run)
    check()
    out: dict[str, Any] = {"run": str(run), "imports": imports, "first_render": first}
    fine = list(at.selectbox(key="ov_label").options)
    labels, levels, zooms, pans = [], [], [], []
    for i in range(repeat):
        label = fine[(i + 1) % len(fine)]
        labels.append(_timed(lambda lb=label: at.selectbox(key="ov_label").set_value(lb).run()))
        check()
    for level in ["coarse", "fine"] * repeat:
        levels.append(_timed(lambda lv=level: at.radio(key="ov_level").set_value(lv).run()))
        check()
    for _ in range(repeat):
        zooms.append(_timed(lambda: at.button(key="nav_in").click().run()))
        check()
    for _ in range(repeat):
        pans.append(_timed(lambda: at.button(key="nav_right").click().run()))
        check()
    slides = list(at.selectbox(key="slide_pick").options)
    second = _timed(lambda: at.selectbox(key="slide_pick").set_value(slides[-1]).run())
    check()
    out.update(
        label_switch=labels,
        level_switch=levels,
        zoom_step=zooms,
        pan_step=pans,
        second_slide_first_render=second,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="hmil-demo/run", help="run directory")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the raw timings as JSON")
    args = parser.parse_args(argv)
    run = Path(args.run).resolve()
    if not (run / "config.yaml").is_file():
        print(f"error: {run}: not a run directory", file=sys.stderr)
        return 2
    result = run_benchmark(run, args.repeat)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"run {result['run']} · {os.cpu_count()} CPUs")
    print(f"imports (torch, openslide, streamlit, viewer): {result['imports']:.2f} s")
    print(f"first slide page render (cold caches):        {result['first_render']:.2f} s")
    print(
        f"another slide, first render:                  {result['second_slide_first_render']:.2f} s"
    )
    for key in ("label_switch", "level_switch", "zoom_step", "pan_step"):
        values = result[key]
        print(
            f"{key.replace('_', ' '):<45} median {statistics.median(values):.3f} s, "
            f"max {max(values):.3f} s (n={len(values)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
