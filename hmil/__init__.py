"""HMIL Studio: hierarchical multiple-instance learning for whole-slide images.

Public API::

    import hmil
    predictor = hmil.load_checkpoint("checkpoint.pt", device="auto")
    pred = predictor.predict("bags/s1.h5")
    pred.to_dict(attention=True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hmil.version import __version__

__all__ = ["Hierarchy", "__version__", "load_bag", "load_checkpoint"]

if TYPE_CHECKING:
    from hmil.data.bags import load_bag
    from hmil.hierarchy import Hierarchy
    from hmil.predict import load_checkpoint

_LAZY = {
    "Hierarchy": "hmil.hierarchy",
    "load_bag": "hmil.data.bags",
    "load_checkpoint": "hmil.predict",
}


def __getattr__(name: str) -> Any:
    """Import heavy submodules (torch) only when their names are used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hmil' has no attribute {name!r}")
