"""Slides: reading (:mod:`.reader`), tissue tiling (:mod:`.tissue`), feature extraction
(:mod:`.extract`) with pluggable patch encoders (:mod:`.encoders`)."""

from __future__ import annotations

from hmil.slides.reader import Region, Slide, fit_size, open_slide, slide_id_from_path

__all__ = ["Region", "Slide", "fit_size", "open_slide", "slide_id_from_path"]
