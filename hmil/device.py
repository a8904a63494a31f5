"""Device selection shared by training, prediction and extraction."""

from __future__ import annotations

import torch

from hmil.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Map ``auto`` to CUDA when present, else CPU; reject ``cuda`` on a machine without one."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("device", f"'{name}' requested but no CUDA device is available")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError("device", f"unknown device '{name}' (expected auto, cpu or cuda[:i])")
