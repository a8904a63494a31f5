"""Helpers shared by the benchmark scripts: machine description, timing, result files."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host_cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    try:
        import psutil

        info["ram_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def median_time(
    fn: Callable[[], Any], repeats: int = 5, warmup: int = 1, sync: bool = False
) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    if sync:
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/Inf → None, numpy scalars → Python."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str):
        with contextlib.suppress(ValueError, AttributeError):
            obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def resumed_runs(log: Path, resume: bool) -> list[dict[str, Any]]:
    """The finished runs recorded in ``log`` (one JSON object a line) when ``resume``; else
    ``[]`` with the old log removed, so a fresh benchmark never mixes in an earlier one."""
    if resume and log.is_file():
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    if log.exists():
        log.unlink()
    return []


def option_names(spec: str) -> list[str]:
    """The names of a comma-separated option (``--cohorts a,b``), stripped, empty ones dropped."""
    return [name.strip() for name in spec.split(",") if name.strip()]


def seed_list(spec: str) -> list[int]:
    """``--seeds``: a count (``5`` → 0..4) or a list (``0,3,4``)."""
    return [int(x) for x in spec.split(",")] if "," in spec else list(range(int(spec)))


def write_json(path: str | Path, obj: Any) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(clean(obj), indent=2) + "\n", encoding="utf-8")
    return p


def machine_line(info: dict[str, Any]) -> str:
    """One markdown line naming the machine and date."""
    parts = [f"measured {info['date']}", f"CPU: {info['host_cpu']}"]
    parts.append(f"{info['cpu_count']} cores visible, torch threads {info['torch_threads']}")
    if "ram_gb" in info:
        parts.append(f"{info['ram_gb']} GB RAM")
    if "gpu" in info:
        parts.append(f"GPU: {info['gpu']} (CUDA {info.get('cuda')})")
    parts.append(f"Python {info['python']}, torch {info['torch']}")
    return "; ".join(parts)
