"""GPU check: bf16 speed table, streamed-vs-in-memory exactness, and end-to-end
prediction of a 1M × 1024 bag held in host memory with copy/compute overlap.

Imports only ``hmil.model`` / ``hmil.predict``-level code (torch, numpy, h5py; no openslide,
streamlit or torchmil), so it runs on a bare CUDA machine. Runs on CPU too (``--device cpu``,
smaller sizes) so it can be tested before the one GPU run. Every bag is SYNTHETIC (random
features); the model is a randomly initialised reference-size HMIL (D = 1024, BRACS 3/7).

Sections:

1. **speed**: forward time of HMIL and of the flat gated baseline (``benchmarks.baselines``,
   the ABMIL-style stand-in: torchmil is not installed on the GPU machine) at N = 1k … 1M, in
   bf16 autocast and fp32, against a plain GEMM ``(65536 × 1024) @ (1024 × 1024)`` in the same
   dtype measured in the same run (ratio = achieved FLOP/s ÷ GEMM FLOP/s; TF32 off for fp32).
2. **exactness**: max |Δp| of the streamed forward (chunks of 65,536) against the in-memory
   forward on the device, fp32 and bf16, and of ``Predictor.predict(path)`` on a chunked ``.h5``
   bag (pinned double-buffered reads) against ``Predictor.predict(tensor)``.
3. **host bag**: a 1M × 1024 float32 bag in pinned host memory; time of one pinned
   host→device copy of the whole bag (and of a pageable copy) against end-to-end bf16
   prediction streamed in pinned chunks with copy/compute overlap (:func:`hmil.predict.
   device_chunks`), and without overlap, and through ``Predictor.predict(tensor)``.
   Target: overlapped prediction ≤ 1.3 × the pinned copy time.

Usage::

    python -m benchmarks.gpu_check --device cuda --out "$OUT"
    python -m benchmarks.gpu_check --device cpu --quick      # test it here first
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _ensure_yaml() -> None:
    """``hmil.config`` imports PyYAML at module level; this check never reads or writes YAML,
    so on a machine without PyYAML a stub that raises on use stands in for it."""
    try:
        import yaml  # noqa: F401
    except ImportError:
        stub = types.ModuleType("yaml")

        class YAMLError(Exception):
            pass

        def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("PyYAML is not installed on this machine")

        stub.YAMLError = YAMLError  # type: ignore[attr-defined]
        stub.safe_load = unavailable  # type: ignore[attr-defined]
        stub.safe_dump = unavailable  # type: ignore[attr-defined]
        sys.modules["yaml"] = stub


_ensure_yaml()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.baselines import FlatGatedMIL  # noqa: E402
from benchmarks.common import machine, machine_line, write_json  # noqa: E402
from hmil.checkpoint import CheckpointInfo  # noqa: E402
from hmil.config import ModelConfig  # noqa: E402
from hmil.data.bags import save_bag  # noqa: E402
from hmil.hierarchy import Hierarchy  # noqa: E402
from hmil.model import HMIL  # noqa: E402
from hmil.predict import Predictor, device_chunks  # noqa: E402

D = 1024
KC, KF = 3, 7


# ---- timing ---------------------------------------------------------------------------------
def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` (CUDA events on GPU, perf_counter on CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def wall(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` including a final device synchronisation."""
    for _ in range(warmup):
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def autocast(device: torch.device, precision: str) -> Any:
    enabled = precision == "bf16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


# ---- models and FLOPs -----------------------------------------------------------------------
def hmil_flops(n: int) -> float:
    c = ModelConfig()
    macs = (D * c.hidden_dim + c.hidden_dim * c.coarse_dim + c.coarse_dim * c.fine_dim
            + c.coarse_dim * 2 * c.coarse_attention_dim + c.coarse_attention_dim * KC
            + c.fine_dim * 2 * c.fine_attention_dim + c.fine_attention_dim * KF
            + KC * c.coarse_dim + KF * c.fine_dim)  # fmt: skip
    return 2.0 * n * macs


def flat_flops(n: int, hidden: int = 512, att: int = 256) -> float:
    return 2.0 * n * (D * hidden + hidden * 2 * att + att + hidden)


def make_hmil(device: torch.device) -> HMIL:
    torch.manual_seed(0)
    return HMIL(D, KC, KF, ModelConfig()).to(device).eval()


def gemm_flops_per_s(device: torch.device, dtype: torch.dtype, repeats: int) -> float:
    rows = 65536 if device.type == "cuda" else 8192
    a = torch.randn(rows, D, device=device, dtype=dtype)
    b = torch.randn(D, D, device=device, dtype=dtype)
    t = timed(lambda: torch.mm(a, b), device, repeats, warmup=3)
    return 2.0 * rows * D * D / t


# ---- sections -------------------------------------------------------------------------------
def speed(device: torch.device, sizes: list[int], precisions: list[str], repeats: int) -> list:
    rows: list[dict[str, Any]] = []
    hmil = make_hmil(device)
    torch.manual_seed(0)
    flat = FlatGatedMIL(D, KF).to(device).eval()
    for precision in precisions:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        for n in sizes:
            x = torch.randn(n, D, device=device)
            gemm_before = gemm_flops_per_s(device, dtype, repeats)
            for name, model, flops in (("hmil", hmil, hmil_flops(n)),
                                       ("flat_gated", flat, flat_flops(n))):  # fmt: skip

                def forward(
                    model: torch.nn.Module = model, x: torch.Tensor = x, precision: str = precision
                ) -> None:
                    with torch.inference_mode(), autocast(device, precision):
                        model(x)

                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                t = timed(forward, device, repeats if n < 1_000_000 else max(3, repeats // 2))
                peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
                rows.append({"model": name, "precision": precision, "n": n, "seconds": t,
                             "instances_per_s": n / t, "gflop": flops / 1e9,
                             "tflop_per_s": flops / t / 1e12,
                             "peak_device_mb": peak / 2**20})  # fmt: skip
            gemm = statistics.median([gemm_before, gemm_flops_per_s(device, dtype, repeats)])
            for row in rows[-2:]:
                row["gemm_tflop_per_s"] = gemm / 1e12
                row["ratio_vs_gemm"] = row["tflop_per_s"] * 1e12 / gemm
            print(json.dumps(rows[-2]), json.dumps(rows[-1]), sep="\n", flush=True)
            del x
    return rows


def _probs(out: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.softmax(out.fine_logits.float(), -1), torch.softmax(out.coarse_logits.float(), -1)


def exactness(device: torch.device, n: int, h5_rows: int, tmp: Path) -> dict[str, Any]:
    model = make_hmil(device)
    gen = torch.Generator().manual_seed(1)
    x_host = torch.randn(n, D, generator=gen) * 2
    x_host[torch.randperm(n, generator=gen)[:50]] += 4  # a few dominant instances
    x = x_host.to(device)
    rows = min(65536, n // 4)  # at least 4 chunks
    out: dict[str, Any] = {"n": n, "chunk_rows": rows}
    for precision in ("fp32", "bf16"):
        with torch.inference_mode(), autocast(device, precision):
            full = model(x)
            stream = model.forward_streaming(x.split(rows), keep_attention=True)
        pf, pc = _probs(full)
        qf, qc = _probs(stream)
        out[precision] = {
            "max_abs_diff_fine_probs": float((pf - qf).abs().max()),
            "max_abs_diff_coarse_probs": float((pc - qc).abs().max()),
            "max_abs_diff_fine_attention": float(
                (full.fine_attention.float() - stream.fine_attention.float()).abs().max()
            ),
        }
    # through the Predictor: a chunked .h5 bag (pinned double-buffered reads) vs a tensor
    info = CheckpointInfo(hierarchy=Hierarchy.preset("bracs"), in_dim=D, model_config=ModelConfig())
    bag = x_host[:h5_rows].numpy()
    path = save_bag(tmp / "exact.h5", bag)
    h5_chunk = min(20_000, h5_rows // 4)
    streamed = Predictor(model, info, device, stream_bytes=1 << 20, chunk_rows=h5_chunk)
    in_memory = Predictor(model, info, device, stream_bytes=1 << 40)
    assert streamed._should_stream(path)
    a = in_memory.predict(torch.from_numpy(bag), attention=True)
    b = streamed.predict(path, attention=True)
    out["predictor_h5"] = {
        "n": h5_rows,
        "chunk_rows": h5_chunk,
        "max_abs_diff_fine_probs": float(np.abs(a.fine_probs - b.fine_probs).max()),
        "max_abs_diff_coarse_probs": float(np.abs(a.coarse_probs - b.coarse_probs).max()),
        "max_abs_diff_fine_attention": float(
            np.abs(a.attention["fine"] - b.attention["fine"]).max()
        ),
    }
    path.unlink()
    out["pass_fp32_1e-5"] = bool(
        out["fp32"]["max_abs_diff_fine_probs"] <= 1e-5
        and out["fp32"]["max_abs_diff_coarse_probs"] <= 1e-5
        and out["predictor_h5"]["max_abs_diff_fine_probs"] <= 1e-5
    )
    print(json.dumps(out), flush=True)
    return out


def _serial_chunks(x: torch.Tensor, rows: int, device: torch.device) -> Iterator[torch.Tensor]:
    """No overlap: each chunk is copied and waited for before its compute is queued."""
    for start in range(0, x.shape[0], rows):
        chunk = x[start : start + rows].to(device, non_blocking=True)
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()
        yield chunk


def host_bag(device: torch.device, n: int, chunk_sizes: list[int], repeats: int) -> dict:
    """End-to-end prediction of a host-resident bag vs the pinned copy of the same bag."""
    model = make_hmil(device)
    cuda = device.type == "cuda"
    t0 = time.perf_counter()
    x = torch.empty(n, D, pin_memory=cuda)
    step = 65536
    gen = torch.Generator(device=device).manual_seed(2)
    for start in range(0, n, step):  # random features generated on the device, copied back
        block = torch.randn(min(step, n - start), D, device=device, generator=gen)
        x[start : start + block.shape[0]].copy_(block)
    out: dict[str, Any] = {"n": n, "bag_gb": n * D * 4 / 1e9, "pinned": bool(x.is_pinned()),
                           "fill_s": time.perf_counter() - t0}  # fmt: skip
    info = CheckpointInfo(hierarchy=Hierarchy.preset("bracs"), in_dim=D, model_config=ModelConfig())
    if cuda:
        dst = torch.empty(n, D, device=device)
        out["pinned_copy_s"] = timed(lambda: dst.copy_(x, non_blocking=True), device, repeats)
        out["pinned_copy_gb_per_s"] = out["bag_gb"] / out["pinned_copy_s"]
        pageable = torch.empty(n, D)
        pageable.copy_(x)
        out["pageable_copy_s"] = timed(lambda: dst.copy_(pageable), device, max(1, repeats // 2))
        del pageable

        def in_memory() -> None:
            dst.copy_(x, non_blocking=True)
            with torch.inference_mode(), autocast(device, "bf16"):
                _probs(model(dst))[0].cpu()

        out["copy_then_in_memory_bf16_s"] = wall(in_memory, device, repeats)
        del dst
        torch.cuda.empty_cache()

        def device_only() -> None:
            with torch.inference_mode(), autocast(device, "bf16"):
                model(xd)

        xd = x[: min(n, 1_000_000)].to(device)
        out["forward_only_bf16_s"] = timed(device_only, device, repeats)
        del xd
        torch.cuda.empty_cache()
    streams: dict[str, Any] = {}
    for rows in chunk_sizes:

        def overlapped(rows: int = rows) -> None:
            with torch.inference_mode(), autocast(device, "bf16"):
                o = model.forward_streaming(device_chunks(x, rows, device), keep_attention=True)
                _probs(o)[0].cpu()

        def serial(rows: int = rows) -> None:
            with torch.inference_mode(), autocast(device, "bf16"):
                o = model.forward_streaming(_serial_chunks(x, rows, device), keep_attention=True)
                _probs(o)[0].cpu()

        streams[str(rows)] = {
            "overlapped_s": wall(overlapped, device, repeats),
            "serial_s": wall(serial, device, max(1, repeats // 2)),
        }
        if cuda:
            streams[str(rows)]["overlapped_vs_pinned_copy"] = (
                streams[str(rows)]["overlapped_s"] / out["pinned_copy_s"]
            )
        print(json.dumps({"chunk_rows": rows, **streams[str(rows)]}), flush=True)
    out["streamed"] = streams
    best = min(chunk_sizes, key=lambda r: streams[str(r)]["overlapped_s"])
    predictor = Predictor(model, info, device, precision="bf16", chunk_rows=best)
    out["predictor_predict_tensor_s"] = wall(lambda: predictor.predict(x), device, repeats)
    out["predictor_chunk_rows"] = best
    if cuda:
        out["best_overlapped_vs_pinned_copy"] = (
            streams[str(best)]["overlapped_s"] / out["pinned_copy_s"]
        )
        out["predictor_vs_pinned_copy"] = out["predictor_predict_tensor_s"] / out["pinned_copy_s"]
        out["target_1.3x_met"] = bool(out["best_overlapped_vs_pinned_copy"] <= 1.3)
    print(json.dumps({k: v for k, v in out.items() if k != "streamed"}), flush=True)
    return out


def markdown(result: dict[str, Any]) -> str:
    dev = result["device"]
    lines = [f"# GPU check ({dev})", "", machine_line(result["machine"]), "",
             "SYNTHETIC random bags, randomly initialised reference-size HMIL (D = 1024, 3/7). "
             "Medians of repeats (CUDA events). GEMM = (65536 × 1024) @ (1024 × 1024) in the "
             "same dtype, measured in the same run; TF32 off.", "",
             "## Forward speed", "",
             "| model | precision | N | ms | instances/s | TFLOP/s | GEMM TFLOP/s | ratio | "
             "peak device MB |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result.get("speed", []):
        lines.append(
            f"| {r['model']} | {r['precision']} | {r['n']:,} | {1e3 * r['seconds']:.2f} | "
            f"{r['instances_per_s']:,.0f} | {r['tflop_per_s']:.2f} | "
            f"{r['gemm_tflop_per_s']:.2f} | {100 * r['ratio_vs_gemm']:.0f} % | "
            f"{r['peak_device_mb']:.0f} |"
        )
    ex = result.get("exactness")
    if ex:
        lines += ["", "## Exactness: streamed vs in-memory", "",
                  f"Bag {ex['n']:,} × {D}, chunks of {ex['chunk_rows']:,} rows.", "",
                  "| path | max Δ fine p | max Δ coarse p | max Δ fine attention |",
                  "|---|---|---|---|"]  # fmt: skip
        for key in ("fp32", "bf16", "predictor_h5"):
            r = ex[key]
            labels = {
                "fp32": "forward_streaming fp32",
                "bf16": "forward_streaming bf16 autocast",
                "predictor_h5": f"Predictor .h5 ({r.get('n', '')} rows, "
                f"chunks of {r.get('chunk_rows')}, fp32)",
            }
            label = labels[key]
            lines.append(
                f"| {label} | {r['max_abs_diff_fine_probs']:.2e} | "
                f"{r['max_abs_diff_coarse_probs']:.2e} | {r['max_abs_diff_fine_attention']:.2e} |"
            )
        lines.append(f"\nfp32 within 1e-5: **{ex['pass_fp32_1e-5']}**.")
    hb = result.get("host_bag")
    if hb:
        lines += ["", f"## End-to-end prediction of a {hb['n']:,} × {D} host bag "
                  f"({hb['bag_gb']:.1f} GB, pinned: {hb['pinned']})", ""]  # fmt: skip
        for key, label in (("pinned_copy_s", "one pinned host→device copy of the bag"),
                           ("pageable_copy_s", "one pageable host→device copy"),
                           ("forward_only_bf16_s", "bf16 forward, bag already on the device"),
                           ("copy_then_in_memory_bf16_s", "pinned copy, then in-memory bf16 "
                            "forward + probabilities"),
                           ("predictor_predict_tensor_s",
                            f"Predictor.predict(tensor), bf16, chunks of "
                            f"{hb.get('predictor_chunk_rows')}")):  # fmt: skip
            if key in hb:
                lines.append(f"- {label}: **{1e3 * hb[key]:.1f} ms**")
        lines += ["", "| chunk rows | overlapped ms | serial ms | overlapped ÷ pinned copy |",
                  "|---|---|---|---|"]  # fmt: skip
        for rows, r in hb["streamed"].items():
            ratio = r.get("overlapped_vs_pinned_copy")
            lines.append(f"| {int(rows):,} | {1e3 * r['overlapped_s']:.1f} | "
                         f"{1e3 * r['serial_s']:.1f} | "
                         f"{'' if ratio is None else f'{ratio:.2f}×'} |")  # fmt: skip
        if "best_overlapped_vs_pinned_copy" in hb:
            lines.append(
                f"\nBest overlapped streaming ÷ pinned copy = "
                f"**{hb['best_overlapped_vs_pinned_copy']:.2f}×** (target ≤ 1.3×); "
                f"Predictor.predict ÷ pinned copy = {hb['predictor_vs_pinned_copy']:.2f}×."
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    p.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results/gpu"))
    p.add_argument("--skip", default="", help="comma-separated: speed,exactness,host")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("error: --device cuda but no CUDA device", file=sys.stderr)
            return 2
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        sizes, precisions, repeats = [1000, 10_000, 100_000, 1_000_000], ["bf16", "fp32"], 10
        exact_n, h5_rows, host_n, chunks = 300_000, 100_000, 1_000_000, [32768, 65536, 131072]
    else:
        sizes, precisions, repeats = [1000, 10_000], ["fp32"], 3
        exact_n, h5_rows, host_n, chunks = 100_000, 30_000, 100_000, [16384, 65536]
    if args.quick:
        sizes, repeats = [1000, 4000], 2
        exact_n, h5_rows, host_n, chunks = 9000, 5000, 20_000, [4096]
    skip = set(args.skip.split(","))
    started = time.perf_counter()
    result: dict[str, Any] = {"machine": machine(), "synthetic": True, "device": (
        torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")}  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "gpu_check" + ("_cpu" if device.type == "cpu" else "") + ("_quick" if args.quick else "")
    sections: list[tuple[str, Callable[[], Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "speed" not in skip:
            sections.append(("speed", lambda: speed(device, sizes, precisions, repeats)))
        if "exactness" not in skip:
            sections.append(("exactness", lambda: exactness(device, exact_n, h5_rows, Path(tmp))))
        if "host" not in skip:
            sections.append(("host_bag", lambda: host_bag(device, host_n, chunks, repeats)))
        for name, fn in sections:
            try:
                result[name] = fn()
            except Exception as exc:  # keep the other sections' results
                result[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
                print(f"error in {name}: {exc!r}", file=sys.stderr, flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            write_json(out / f"{tag}.json", result)  # after every section: partial results
    result["total_s"] = time.perf_counter() - started
    write_json(out / f"{tag}.json", result)
    (out / f"{tag}.md").write_text(markdown(result), encoding="utf-8")
    print(f"wrote {out / (tag + '.md')} in {result['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
