"""``hmil.device.resolve_device``: the device names every command accepts."""

from __future__ import annotations

import pytest
import torch

from hmil.device import DEVICE_CHOICES, resolve_device
from hmil.errors import ConfigError


def test_cpu_and_device_objects_pass_through() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    given = torch.device("cpu")
    assert resolve_device(given) is given
    assert DEVICE_CHOICES == ("auto", "cpu", "cuda")


def test_auto_is_cuda_exactly_when_present() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device().type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=f"'{name}' requested but no CUDA device is available"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["tpu", "CPU", "gpu", ""])
def test_unknown_names_are_refused_with_the_choices(name: str) -> None:
    with pytest.raises(ConfigError, match=r"unknown device '.*' \(expected auto, cpu or cuda"):
        resolve_device(name)
