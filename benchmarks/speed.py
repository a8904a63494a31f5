"""Speed of HMIL against the machine's matmul limit and torchmil's gated ABMIL, in one run.

Measured side by side (every number below comes from this one invocation):

1. **Forward throughput** (instances/s) of HMIL (reference size, D = 1024, BRACS 3/7) on bags of
   N = 1k, 10k, 100k, 1M random instances, against
   (a) the machine's plain fp32 matmul throughput: a ``(8192 × D) @ (D × D)`` GEMM timed in the
   same process right before and after the model; the ratio is HMIL's achieved FLOP/s (its
   GEMM FLOPs, counted analytically) over the matmul's FLOP/s — i.e. the time an ideal
   matmul-only implementation of the same FLOPs would take, over HMIL's time;
   (b) torchmil's gated ABMIL (``Linear(D→512)+ReLU`` extractor, att_dim 128) on the same bag;
   (c) this project's flat gated baseline (CLAM-small sizes), and (d) ``hmil_oneshot``: HMIL's
   forward as it was before the CPU inference optimisations (whole bag at once, out-of-place
   activations; N ≤ 100k), to show what they changed.
   Each (model, N) runs in a fresh process, which also gives its peak RSS (memory vs N).
   N = 1M is forwarded in 65,536-row chunks with the exact online softmax (the way
   ``hmil predict`` runs big bags); the in-memory forward would need ~15 GB of activations.
2. **Training throughput** (bags/s): one optimiser step per bag of N = 4096, D = 1024, HMIL's
   full loss (both CEs, alignments, SupCon with its memory) vs ABMIL's cross-entropy.
3. **Extraction**: the default encoder's end-to-end ``extract_slide`` (read + encode + write)
   against only reading the same patches the same way (same reader threads, same resize).
4. **Heatmap rendering** of 100k patches (``hmil.heatmap.render_heatmap``, 2048 px).

Timings are medians of repeats within a process, then medians over ``--rounds`` interleaved
rounds (every (N, model) once per round); the machine is shared (other jobs use the same 2
cores), so the ratios — measured under the same conditions within one process — are the robust
numbers.

Usage::

    python -m benchmarks.speed            # full run (≈ 15–30 min on 2 busy cores)
    python -m benchmarks.speed --quick    # seconds: small N and D
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import REPO, RESULTS, machine, machine_line, median_time, write_json

CHUNK_ROWS = 65536
STREAM_FROM = 500_000  # bags at least this large are forwarded in chunks


# ---- FLOP counts ---------------------------------------------------------------------------
def hmil_flops(n: int, d: int, kc: int = 3, kf: int = 7) -> float:
    """GEMM FLOPs of one HMIL forward (reference sizes) on ``n`` instances of dimension ``d``."""
    from hmil.config import ModelConfig

    c = ModelConfig()
    macs = (
        d * c.hidden_dim
        + c.hidden_dim * c.coarse_dim
        + c.coarse_dim * c.fine_dim
        + c.coarse_dim * 2 * c.coarse_attention_dim
        + c.coarse_attention_dim * kc
        + c.fine_dim * 2 * c.fine_attention_dim
        + c.fine_attention_dim * kf
        + kc * c.coarse_dim  # pooling A_c h_c
        + kf * c.fine_dim
    )
    return 2.0 * n * macs


def abmil_flops(n: int, d: int, width: int = 512, att: int = 128) -> float:
    """GEMM FLOPs of torchmil gated ABMIL with a ``Linear(d→width)`` extractor."""
    return 2.0 * n * (d * width + width * 2 * att + att + width)


def flat_flops(n: int, d: int, hidden: int = 512, att: int = 256) -> float:
    return 2.0 * n * (d * hidden + hidden * 2 * att + att + hidden)


FLOPS = {
    "hmil": hmil_flops,
    "hmil_oneshot": hmil_flops,
    "abmil": abmil_flops,
    "flat_gated": flat_flops,
}


# ---- child processes -----------------------------------------------------------------------
def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Peak RSS since the last :func:`reset_peak_rss` (VmHWM), else since the process start."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def build_model(name: str, d: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if name in ("hmil", "hmil_oneshot"):
        from hmil.model import HMIL

        model = HMIL(d, 3, 7)
        # "hmil_oneshot": the forward as it was before the CPU inference optimisations (whole
        # bag at once, out-of-place activations) — training mode with dropout 0 takes that
        # path with the same math
        return model.train() if name == "hmil_oneshot" else model.eval()
    if name == "flat_gated":
        from benchmarks.baselines import FlatGatedMIL

        return FlatGatedMIL(d, 7).eval()
    from benchmarks.peers import ABMILPeer

    return ABMILPeer(d, 7).eval()


def matmul_flops_per_s(d: int, rows: int = 8192, repeats: int = 10) -> float:
    """fp32 FLOP/s of a plain ``(rows × d) @ (d × d)`` GEMM (median time)."""
    a, b = torch.randn(rows, d), torch.randn(d, d)
    t = median_time(lambda: torch.mm(a, b), repeats=repeats, warmup=2)
    return 2.0 * rows * d * d / t


def child_forward(name: str, n: int, d: int, repeats: int) -> dict[str, Any]:
    """Time one model's forward on a random ``(n, d)`` bag; memory and matmul reference too."""
    model = build_model(name, d)
    base = rss_mb()
    x = torch.randn(n, d)
    bag_mb = rss_mb() - base
    streamed = n >= STREAM_FROM
    if streamed and name != "hmil":
        streamed = False  # peers have no streaming path: in memory (if RAM allows)

    def forward() -> None:
        with torch.inference_mode():
            if streamed:
                model.forward_streaming(x.split(CHUNK_ROWS), keep_attention=True)
            else:
                model(x)

    mm_before = matmul_flops_per_s(d)
    with torch.inference_mode():  # warm up on a small bag (kernels, allocator)
        model(x[: min(n, 4096)])
    with_bag = rss_mb()
    peak_reset = reset_peak_rss()  # the forward's own peak, not the bag's creation
    # steady state: small bags get two full warm-up forwards (allocator, page faults)
    t = median_time(
        forward, repeats=repeats, warmup=0 if n >= 1_000_000 else (1 if n >= 100_000 else 2)
    )
    forward_peak = peak_rss_mb()
    mm_after = matmul_flops_per_s(d)
    flops = FLOPS[name](n, d)
    mm = float(np.median([mm_before, mm_after]))
    return {
        "model": name,
        "n": n,
        "d": d,
        "mode": "streamed" if streamed else "in-memory",
        "seconds": t,
        "instances_per_s": n / t,
        "gflop": flops / 1e9,
        "model_gflop_per_s": flops / t / 1e9,
        "matmul_gflop_per_s": mm / 1e9,
        "matmul_gflop_per_s_before_after": [mm_before / 1e9, mm_after / 1e9],
        "ratio_vs_matmul": flops / t / mm,
        "rss_base_mb": base,
        "bag_mb": bag_mb,
        "peak_rss_mb": forward_peak,
        "peak_reset": peak_reset,
        "working_mb": forward_peak - with_bag,
        "threads": torch.get_num_threads(),
    }


def child_train(name: str, n: int, d: int, n_bags: int) -> dict[str, Any]:
    """Optimiser steps per second, one bag per step (forward + loss + backward + Adam)."""
    import torch.nn.functional as F

    from hmil.config import LossConfig
    from hmil.hierarchy import Hierarchy
    from hmil.model.losses import HMILLoss, SupConMemory

    h = Hierarchy.preset("bracs")
    model = build_model(name, d).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    bags = [torch.randn(n, d, generator=gen) for _ in range(4)]
    labels = [int(i) % h.n_fine for i in range(len(bags))]
    criterion = HMILLoss(LossConfig(), torch.from_numpy(h.mapping))
    memory = SupConMemory(64)

    def step(i: int) -> None:
        x, y = bags[i % len(bags)], labels[i % len(bags)]
        if name == "hmil":
            out = model(x)
            loss = criterion(out, y, epoch=5, epochs=20, memory=memory).total
            memory.push(out.fine_embeddings, y)
        else:
            out = model(x, target=y)
            loss = F.cross_entropy(out.logits[None], torch.tensor([y]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(8):  # warm up and fill the SupCon memory
        step(i)
    t0 = time.perf_counter()
    for i in range(n_bags):
        step(i)
    seconds = time.perf_counter() - t0
    return {"model": name, "n": n, "d": d, "bags": n_bags, "seconds": seconds,
            "bags_per_s": n_bags / seconds, "peak_rss_mb": peak_rss_mb()}  # fmt: skip


_THREADS: int | None = None


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    if _THREADS is not None:
        env["OMP_NUM_THREADS"] = str(_THREADS)
    return env


def run_child(args: list[str], timeout: float = 3600) -> dict[str, Any]:
    """Run ``python -m benchmarks.speed --child ...`` and parse its last stdout line (JSON)."""
    cmd = [sys.executable, "-m", "benchmarks.speed", "--child", *args]
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=_child_env()
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed",
                "args": args}  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- extraction and heatmap (in the parent) ------------------------------------------------
@dataclass
class ExtractionResult:
    slide: str
    n_patches: int
    read_s: float
    read_raw_s: float
    encode_only_s: float
    extract_s: float
    ratio_extract_vs_read: float
    patches_per_s: float
    readers: int
    torch_threads: int


def bench_extraction(
    slide_path: Path, max_patches: int, work: Path, repeats: int = 3
) -> ExtractionResult:
    """End-to-end default-encoder extraction vs reading the same patches (same readers)."""
    import h5py

    from hmil.slides.encoders import create_encoder
    from hmil.slides.extract import ExtractConfig, extract_slide, iter_patch_batches, plan_reads
    from hmil.slides.patch_files import load_patches, save_patches
    from hmil.slides.reader import open_slide
    from hmil.slides.tiling import tile_slide
    from hmil.slides.tissue import TilingConfig

    work.mkdir(parents=True, exist_ok=True)
    with open_slide(slide_path) as slide:
        tiling = tile_slide(slide, TilingConfig(patch_size=256, magnification=20.0))
    tiling.coords = tiling.coords[:max_patches]
    tiling.fractions = tiling.fractions[:max_patches]
    patch_file = save_patches(work / "patches" / f"{slide_path.stem}.h5", tiling)
    patches = load_patches(patch_file)
    encoder = create_encoder("hed-texture", device="cpu")
    config = ExtractConfig(overwrite=True)
    n = patches.coords.shape[0]

    def read_all(raw: bool) -> list[np.ndarray]:
        with open_slide(slide_path) as s:
            plan = plan_reads(s, patches, None if raw else encoder.input_size)
            return list(
                iter_patch_batches(s, patches.coords, plan, config.batch_size,
                                   config.num_readers, config.prefetch_batches)
            )  # fmt: skip

    read_s = median_time(lambda: read_all(False), repeats=repeats, warmup=1)
    read_raw_s = median_time(lambda: read_all(True), repeats=repeats, warmup=0)
    batches = [torch.from_numpy(b) for b in read_all(False)]
    encode_s = median_time(lambda: [encoder(b) for b in batches], repeats=repeats, warmup=1)
    out = work / "bags"

    def extract() -> None:
        extract_slide(slide_path, patch_file, out, encoder, config, progress=False)

    extract_s = median_time(extract, repeats=repeats, warmup=1)
    with h5py.File(out / f"{slide_path.stem}.h5", "r") as f:
        assert f["features"].shape[0] == n
    return ExtractionResult(
        slide=slide_path.name, n_patches=n, read_s=read_s, read_raw_s=read_raw_s,
        encode_only_s=encode_s, extract_s=extract_s, ratio_extract_vs_read=extract_s / read_s,
        patches_per_s=n / extract_s, readers=config.num_readers,
        torch_threads=torch.get_num_threads(),
    )  # fmt: skip


def bench_extraction_many(
    slides: list[Path], max_patches: int, work: Path, repeats: int
) -> dict[str, Any]:
    """:func:`bench_extraction` per slide, and the totals over all slides."""
    per = [bench_extraction(p, max_patches, work, repeats) for p in slides]
    total = {
        key: sum(getattr(r, key) for r in per)
        for key in ("n_patches", "read_s", "read_raw_s", "encode_only_s", "extract_s")
    }
    total["slide"] = ", ".join(r.slide for r in per)
    total["ratio_extract_vs_read"] = total["extract_s"] / total["read_s"]
    total["patches_per_s"] = total["n_patches"] / total["extract_s"]
    total["readers"] = per[0].readers
    total["torch_threads"] = per[0].torch_threads
    total["per_slide"] = [asdict(r) for r in per]
    return total


def bench_heatmap(n: int, repeats: int = 5) -> dict[str, Any]:
    """Median time of rendering one class's attention over ``n`` patches (blank canvas)."""
    from hmil.heatmap import render_heatmap

    side = int(np.ceil(np.sqrt(n)))
    idx = np.arange(n)
    coords = np.stack([idx % side, idx // side], 1).astype(np.int64) * 256
    scores = np.random.default_rng(0).random(n).astype(np.float32)
    seconds = median_time(lambda: render_heatmap(scores, coords, 256.0, max_size=2048), repeats, 1)
    image = render_heatmap(scores, coords, 256.0, max_size=2048)
    return {"n_patches": n, "seconds": seconds, "image_shape": list(image.shape)}


# ---- plots and tables ----------------------------------------------------------------------
def plot(forward: list[dict[str, Any]], out: Path, tag: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    ok = [r for r in forward if "error" not in r]
    names = sorted({r["model"] for r in ok})
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in names:
        rows = sorted((r for r in ok if r["model"] == name), key=lambda r: r["n"])
        ax.plot([r["n"] for r in rows], [r["instances_per_s"] for r in rows], "o-", label=name)
        if name == "hmil":
            bound = [r["matmul_gflop_per_s"] * 1e9 / (r["gflop"] * 1e9 / r["n"]) for r in rows]
            ax.plot([r["n"] for r in rows], bound, "k--", label="hmil at matmul peak")
    ax.set(xscale="log", yscale="log", xlabel="instances per bag N",
           ylabel="instances / s", title="Forward throughput (CPU fp32)")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(out / f"{tag}_throughput.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in names:
        rows = sorted((r for r in ok if r["model"] == name), key=lambda r: r["n"])
        ax.plot([r["n"] for r in rows], [max(r["working_mb"], 1.0) for r in rows], "o-",
                label=f"{name} working memory")  # fmt: skip
    rows = sorted((r for r in ok if r["model"] == "hmil"), key=lambda r: r["n"])
    bag = [r["n"] * r["d"] * 4 / 2**20 for r in rows]  # float32 (N, D)
    ax.plot([r["n"] for r in rows], bag, "k:", label="the bag itself (N × D float32)")
    ax.set(xscale="log", yscale="log", xlabel="instances per bag N",
           ylabel="MB (forward's peak RSS above the bag; ≥ 1)",
           title="Forward memory (CPU fp32)")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / f"{tag}_memory.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Speed: HMIL vs matmul limit and torchmil ABMIL (CPU)", "",
             machine_line(result["machine"]), "",
             "Random SYNTHETIC bags. Each cell: median over rounds (each a fresh process, "
             "median of repeats); the machine is shared, so absolute times are noisy — the "
             "matmul reference is measured in the same process right before and after the "
             "model, and ratios use it.",
             "", "## Forward throughput", "",
             "| model | N | D | mode | s | instances/s | GFLOP/s | matmul GFLOP/s | "
             "ratio vs matmul | vs ABMIL (time) | working MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    fwd = [r for r in result["forward"] if "error" not in r]
    abmil = {r["n"]: r for r in fwd if r["model"] == "abmil"}
    for r in sorted(fwd, key=lambda r: (r["n"], r["model"])):
        rel = ""
        if r["n"] in abmil:
            rel = f"{r['seconds'] / abmil[r['n']]['seconds']:.2f}×"
        lines.append(
            f"| {r['model']} | {r['n']:,} | {r['d']} | {r['mode']} | {r['seconds']:.3f} | "
            f"{r['instances_per_s']:,.0f} | {r['model_gflop_per_s']:.1f} | "
            f"{r['matmul_gflop_per_s']:.1f} | {100 * r['ratio_vs_matmul']:.0f} % | {rel} | "
            f"{r['working_mb']:.0f} |"
        )
    for r in result["forward"]:
        if "error" in r:
            lines.append(f"| failed: {r['args']} | {r['error']} |")
    lines += ["", "## Training throughput (one optimiser step per bag)", "",
              "| model | N | D | bags/s |", "|---|---|---|---|"]  # fmt: skip
    for r in result["train"]:
        if "error" not in r:
            lines.append(f"| {r['model']} | {r['n']} | {r['d']} | {r['bags_per_s']:.2f} |")
    ex = result.get("extraction")
    if ex:
        lines += ["", "## Extraction (default encoder hed-texture, CPU)", "",
                  f"Slides `{ex['slide']}`, {ex['n_patches']} patches, {ex['readers']} reader "
                  f"threads, {ex['torch_threads']} torch threads.", "",
                  "| step | s | patches/s |", "|---|---|---|",
                  f"| read only (as the pipeline reads: level, resize to 128) | "
                  f"{ex['read_s']:.2f} | {ex['n_patches'] / ex['read_s']:.0f} |",
                  f"| read only, raw 256 px (no resize) | {ex['read_raw_s']:.2f} | "
                  f"{ex['n_patches'] / ex['read_raw_s']:.0f} |",
                  f"| encode only (in-memory batches) | {ex['encode_only_s']:.2f} | "
                  f"{ex['n_patches'] / ex['encode_only_s']:.0f} |",
                  f"| extract_slide end to end | {ex['extract_s']:.2f} | "
                  f"{ex['patches_per_s']:.0f} |", "",
                  f"Extraction / read = **{ex['ratio_extract_vs_read']:.2f}×** "
                  "(target ≤ 2×)."]  # fmt: skip
    hm = result.get("heatmap")
    if hm:
        lines += ["", "## Heatmap rendering", "",
                  f"{hm['n_patches']:,} patches → {hm['image_shape'][1]}×{hm['image_shape'][0]} "
                  f"PNG array: **{hm['seconds']:.3f} s** (target ≤ 0.3 s)."]  # fmt: skip
    return "\n".join(lines) + "\n"


# ---- main ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--sizes", default="1000,10000,100000,1000000")
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--models", default="hmil,hmil_oneshot,abmil,flat_gated")
    p.add_argument(
        "--slides", default="", help="comma-separated slides for the extraction benchmark"
    )
    p.add_argument("--rounds", type=int, default=3, help="forward rounds (median reported)")
    p.add_argument("--max-patches", type=int, default=2000)
    p.add_argument("--skip", default="", help="comma-separated: forward,train,extract,heatmap")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--work", default="/tmp/hmil-bench-speed", help="scratch directory")
    p.add_argument("--tag", default="speed")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--render", metavar="JSON", help="only re-render the markdown and plots")
    args = p.parse_args(argv)
    if args.render:
        path = Path(args.render)
        result = json.loads(path.read_text(encoding="utf-8"))
        plot(result["forward"], path.parent, path.stem)
        path.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
        return 0
    if args.threads is not None:
        global _THREADS
        _THREADS = args.threads
        torch.set_num_threads(args.threads)
    if args.child:
        kind, name, n, d, k = args.child
        if kind == "forward":
            print(json.dumps(child_forward(name, int(n), int(d), int(k))))
        else:
            print(json.dumps(child_train(name, int(n), int(d), int(k))))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    d = args.dim
    models = args.models.split(",")
    train_n, train_bags, heat_n, repeats = 4096, 8, 100_000, 3
    if args.quick:
        sizes, d, train_n, train_bags, heat_n, repeats = [256, 1024], 64, 128, 2, 10_000, 1
        args.max_patches = min(args.max_patches, 16)
        args.tag = "speed_quick"
    skip = set(args.skip.split(","))
    result: dict[str, Any] = {"machine": machine(), "synthetic": True, "forward": [],
                              "train": []}  # fmt: skip
    rounds = 1 if args.quick else args.rounds
    if "forward" not in skip:
        raw: list[dict[str, Any]] = []
        for round_ in range(rounds):  # interleaved: each round visits every (N, model) once
            for n in sizes:
                for name in models:
                    if name == "hmil_oneshot" and n >= STREAM_FROM:
                        continue  # ~15 GB of activations at 1M: not on this machine
                    k = 5 if n <= 10_000 else (3 if n <= 100_000 else 1)
                    r = run_child(["forward", name, str(n), str(d), str(1 if args.quick else k)])
                    r["round"] = round_
                    raw.append(r)
                    print(json.dumps({k: r.get(k) for k in ("round", "model", "n", "seconds",
                          "ratio_vs_matmul", "working_mb", "error")}), flush=True)  # fmt: skip
        result["forward_rounds"] = raw
        result["forward"] = median_rows(raw)
    if "train" not in skip:
        raw_train = []
        for round_ in range(rounds):
            for name in ("hmil", "abmil"):
                r = run_child(["train", name, str(train_n), str(d), str(train_bags)])
                r["round"] = round_
                raw_train.append(r)
                print(json.dumps(r), flush=True)
        result["train_rounds"] = raw_train
        result["train"] = median_rows(raw_train)
    if "extract" not in skip:
        slides = [Path(p) for p in args.slides.split(",") if p] or _default_slides(args.quick)
        slides = [p for p in slides if p.is_file()]
        if slides:
            work = Path(args.work) / "extract"
            ex = bench_extraction_many(slides, args.max_patches, work, repeats)
            result["extraction"] = ex
            print(json.dumps({k: v for k, v in ex.items() if k != "per_slide"}), flush=True)
    if "heatmap" not in skip:
        result["heatmap"] = bench_heatmap(heat_n, 5 if not args.quick else 1)
        print(json.dumps(result["heatmap"]), flush=True)
    out = Path(args.out)
    write_json(out / f"{args.tag}.json", result)
    if result["forward"]:
        result["plots"] = [str(p.relative_to(out)) for p in plot(result["forward"], out, args.tag)]
    (out / f"{args.tag}.md").write_text(markdown(result), encoding="utf-8")
    print(f"wrote {out / (args.tag + '.md')}")
    return 0


def _default_slides(quick: bool) -> list[Path]:
    """The shared TCGA/CMU test slides, plus up to 8 demo slides when a demo cohort exists."""
    shared = REPO.parent / "shared" / "data" / "slides"
    slides = [shared / "tcga-cr-7395-01a-01-ts1.svs", shared / "cmu-1-small-region.svs"]
    if not quick:
        slides += sorted((REPO / "hmil-demo" / "slides").glob("*.tiff"))[:8]
    return [p for p in slides if p.is_file()][: 1 if quick else None]


def median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, n): the median of every numeric field over rounds."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        if "error" in r:
            continue
        groups.setdefault((r["model"], r["n"]), []).append(r)
    out = []
    for (model, n), items in groups.items():
        row: dict[str, Any] = {"model": model, "n": n, "rounds": len(items)}
        for key, value in items[0].items():
            if key in row or key == "round":
                continue
            values = [it[key] for it in items]
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if numeric and any(v != value for v in values):
                row[key] = float(np.median(values))
            else:
                row[key] = value
        out.append(row)
    return out + [r for r in rows if "error" in r]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
