"""Peak memory of ``hmil predict`` / ``hmil heatmap`` on a bag too large to hold comfortably.

Writes a SYNTHETIC 1,000,000 × 1024 float32 ``.h5`` bag (4 GB, random features, grid coords)
chunk by chunk under ``--work`` (default /tmp), a randomly initialised reference-size HMIL
checkpoint (D = 1024, BRACS 3/7), then runs the real CLI in a fresh process per command and
reads that process's peak resident set size from ``wait4`` (``ru_maxrss``). The bag is deleted
afterwards. Target (issue 8): peak RSS ≤ 1.5 GB for the 1M-instance bag.

Also checks exactness on the same file: the streamed fine/coarse probabilities against an
in-memory forward of the first ``--exact-rows`` instances written as their own bag is covered
by ``tests/core/test_streaming.py``; here the streamed prediction of the full bag is compared
with a float64 reference computed chunk-wise (two-pass softmax), max |Δp| reported.

Usage::

    python -m benchmarks.streaming_memory            # 1M × 1024 (≈ 4 GB on disk, minutes)
    python -m benchmarks.streaming_memory --quick    # 60k × 256 smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from benchmarks.common import REPO, RESULTS, machine, machine_line, write_json
from hmil.checkpoint import CheckpointInfo, load_checkpoint_file, save_checkpoint
from hmil.config import ModelConfig
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL

WRITE_ROWS = 65536


def write_big_bag(path: Path, n: int, d: int, seed: int = 0) -> float:
    """Write an ``(n, d)`` float32 SYNTHETIC bag chunk by chunk; returns seconds taken."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    with h5py.File(path, "w") as f:
        feats = f.create_dataset("features", shape=(n, d), dtype=np.float32)
        feats.attrs["encoder"] = "synthetic-random"
        feats.attrs["synthetic"] = True
        coords = f.create_dataset("coords", shape=(n, 2), dtype=np.int64)
        coords.attrs["patch_size_level0"] = 256
        for start in range(0, n, WRITE_ROWS):
            stop = min(n, start + WRITE_ROWS)
            block = rng.standard_normal((stop - start, d), dtype=np.float32)
            block[rng.random(stop - start) < 0.01] += 3.0  # a few standout instances
            feats[start:stop] = block
            idx = np.arange(start, stop)
            coords[start:stop] = np.stack([idx % side, idx // side], 1) * 256
    return time.perf_counter() - t0


def make_checkpoint(path: Path, d: int) -> Path:
    torch.manual_seed(0)
    model = HMIL(d, 3, 7, ModelConfig())
    info = CheckpointInfo(
        hierarchy=Hierarchy.preset("bracs"), in_dim=d, model_config=ModelConfig(),
        encoder="synthetic-random",
    )  # fmt: skip
    return save_checkpoint(path, model, info)


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` in a fresh process; its wall time, exit code and peak RSS (from wait4)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    # read pipes in the background so a chatty child cannot block
    import threading

    out: dict[str, str] = {}

    def drain(name: str, stream: Any) -> None:
        out[name] = stream.read()

    threads = [
        threading.Thread(target=drain, args=("stdout", proc.stdout)),
        threading.Thread(target=drain, args=("stderr", proc.stderr)),
    ]
    for t in threads:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    for t in threads:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "cmd": " ".join(cmd[2:]),
        "rc": proc.returncode,
        "seconds": round(time.perf_counter() - t0, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "stderr_tail": out.get("stderr", "")[-400:],
    }


@torch.no_grad()
def reference_probs(ckpt: Path, bag: Path, rows: int = WRITE_ROWS) -> np.ndarray:
    """Fine probabilities by a float64 two-pass softmax over chunks (independent of OnlinePool)."""
    model, _ = load_checkpoint_file(ckpt)
    model = model.double().eval()
    with h5py.File(bag, "r") as f:
        dset = f["features"]
        n = dset.shape[0]
        scores = []
        for start in range(0, n, rows):
            x = torch.from_numpy(dset[start : start + rows]).double()
            _, h_f = model.instance_features(x)
            scores.append(model.fine_attention(h_f))
        s = torch.cat(scores, 1)  # (Kf, N)
        weights = torch.softmax(s, dim=1)
        pooled = torch.zeros(model.n_fine, model.config.fine_dim, dtype=torch.float64)
        for start in range(0, n, rows):
            x = torch.from_numpy(dset[start : start + rows]).double()
            _, h_f = model.instance_features(x)
            pooled += weights[:, start : start + rows] @ h_f
    logits = model.fine_head(pooled).squeeze(-1)
    return torch.softmax(logits, -1).numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="60k × 256 smoke test")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--work", default="/tmp/hmil-bench-streaming")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--keep", action="store_true", help="keep the bag (default: deleted)")
    p.add_argument("--no-reference", action="store_true", help="skip the float64 reference")
    args = p.parse_args(argv)
    n, d = (60_000, 256) if args.quick else (args.n, args.dim)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    bag = work / "big_bag.h5"
    ckpt = make_checkpoint(work / "checkpoint.pt", d)
    result: dict[str, Any] = {"machine": machine(), "synthetic": True, "n": n, "dim": d}
    try:
        result["write_seconds"] = round(write_big_bag(bag, n, d), 1)
        result["bag_bytes"] = bag.stat().st_size
        py = [sys.executable, "-m", "hmil"]
        runs = {
            "predict": [*py, "predict", "--checkpoint", str(ckpt), "--device", "cpu",
                        str(bag), "--out", str(work / "pred.jsonl")],
            "predict --attention": [*py, "predict", "--checkpoint", str(ckpt), "--device", "cpu",
                                    "--attention", str(bag), "--out", str(work / "pred_att.jsonl")],
            "heatmap": [*py, "heatmap", "--checkpoint", str(ckpt), "--bag", str(bag),
                        "--device", "cpu", "--level", "fine", "--label", "IC",
                        "--out", str(work / "heatmap.png")],
        }  # fmt: skip
        baseline = run_measured([sys.executable, "-c", "import torch, h5py, hmil.predict"])
        result["import_only"] = baseline
        result["runs"] = {}
        for name, cmd in runs.items():
            record = run_measured(cmd)
            result["runs"][name] = record
            print(f"{name}: rc {record['rc']}, {record['seconds']} s, "
                  f"peak RSS {record['peak_rss_mb']} MB", flush=True)  # fmt: skip
        pred = json.loads((work / "pred.jsonl").read_text().splitlines()[0])
        result["n_instances_reported"] = pred["n_instances"]
        if not args.no_reference:
            ref = reference_probs(ckpt, bag)
            got = np.array(list(pred["fine"]["probs"].values()))
            # the record rounds probabilities to 6 decimals: Δ ≤ 5e-7 from rounding alone
            result["max_abs_diff_vs_float64_reference"] = float(np.abs(ref - got).max())
            print(f"max |p_stream − p_float64| = {result['max_abs_diff_vs_float64_reference']:.2e}")
    finally:
        if not args.keep:
            bag.unlink(missing_ok=True)
        for name in ("pred.jsonl", "pred_att.jsonl", "heatmap.png"):
            (work / name).unlink(missing_ok=True)
    out = Path(args.out)
    tag = "streaming_memory_quick" if args.quick else "streaming_memory"
    write_json(out / f"{tag}.json", result)
    lines = [
        f"# Streaming inference memory ({n:,} × {d} float32 SYNTHETIC bag, "
        f"{result['bag_bytes'] / 1e9:.2f} GB)",
        "",
        machine_line(result["machine"]),
        "",
        "Each command ran in a fresh process; peak RSS from wait4 (ru_maxrss). Target ≤ 1.5 GB.",
        "",
        "| command | exit | wall s | peak RSS MB |",
        "|---|---|---|---|",
        f"| python -c 'import torch, h5py, hmil.predict' | {baseline['rc']} | "
        f"{baseline['seconds']} | {baseline['peak_rss_mb']} |",
    ]
    for name, r in result["runs"].items():
        lines.append(f"| hmil {name} | {r['rc']} | {r['seconds']} | {r['peak_rss_mb']} |")
    if "max_abs_diff_vs_float64_reference" in result:
        lines += [
            "",
            "Streamed fine probabilities vs a float64 two-pass reference: max |Δp| = "
            f"{result['max_abs_diff_vs_float64_reference']:.2e} (the record rounds to 6 decimals).",
        ]
    (out / f"{tag}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True) if not args.keep else None
    return 0


if __name__ == "__main__":
    sys.exit(main())
