"""The HMIL network and its losses."""

from hmil.model.hmil import HMIL, HMILOutput

__all__ = ["HMIL", "HMILOutput"]
