"""One exception family for every user-facing problem.

The CLI turns any :class:`HMILError` into a single line ``error: <where>: <problem>`` and exit
code 2, so library code raises these for bad *input* (files, labels, configs) and lets genuine
bugs surface as ordinary exceptions with a traceback.
"""

from __future__ import annotations

from pathlib import Path


class HMILError(Exception):
    """A problem with user input, reported as ``<where>: <problem>``.

    Args:
        where: the file, slide id or config key the problem is about.
        problem: one short sentence saying what is wrong (and what was expected).
    """

    def __init__(self, where: str | Path, problem: str) -> None:
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{self.where}: {problem}")


class BagError(HMILError):
    """A feature bag that cannot be used (missing, empty, non-finite, wrong shape or dimension)."""


class SlideError(HMILError):
    """A slide file that cannot be opened or read (corrupt, truncated, unsupported)."""


class TilingError(HMILError):
    """A tiling input or output that cannot be used: a patch coordinate file, a slide list, a
    tissue GeoJSON, or a slide whose tissue gives no patch."""


class AttentionError(HMILError):
    """Attention scores that cannot be drawn or exported: non-finite, or not one per patch."""


class UploadError(HMILError):
    """A file uploaded to the viewer that is refused (empty, or over the size limit)."""


class HierarchyError(HMILError):
    """A label hierarchy that is not a valid two-level tree."""


class LabelError(HMILError):
    """A label table with missing columns, unknown or empty labels, or duplicate slide ids."""


class SplitError(HMILError):
    """A split file that is malformed or names slides without a label."""


class ConfigError(HMILError):
    """A config file or value that is malformed, unknown or out of range."""


class CheckpointError(HMILError):
    """A file that is not an HMIL checkpoint, or one that does not fit the data."""


class ReviewError(HMILError):
    """A slide review that cannot be recorded or applied: an unknown verdict, a bad reviewer
    name, a correction that conflicts with another reviewer's."""


class RegionError(HMILError):
    """An annotation file or drawn region that cannot be used: not a GeoJSON FeatureCollection,
    too large, a polygon that crosses itself or leaves the slide, an unknown class name."""


class RunError(HMILError):
    """A run directory in a state that forbids the requested action (e.g. already in use)."""
