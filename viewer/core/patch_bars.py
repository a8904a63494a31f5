"""One patch's attention under every label, as bars on the slide page's own scale (pure HTML).

A patch's percentile rank is high under every label when the model attends it for any of them,
so a chart of ranks says the lesion patch matters for *normal* too. The bars here show
attention × N — a multiple of an average patch's share, the default scale of the map — on a log
axis from ×0.1 to ×100, with a mark at ×1: a label that ignores the patch shows a short bar.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from viewer.core.charts import BAR_COLOUR, TRACK_COLOUR

#: the bars' log axis, in multiples of an average patch
AXIS = (0.1, 100.0)


def bar_share(times_average: float) -> float:
    """Where ``times_average`` lies on the log axis :data:`AXIS`, 0..1 (clipped)."""
    lo, hi = AXIS
    if not math.isfinite(times_average) or times_average <= lo:
        return 0.0
    return min(1.0, math.log(times_average / lo) / math.log(hi / lo))


def patch_bars_html(rows: Sequence[dict[str, object]], times_key: str, current: str) -> str:
    """Rows ``{level, label, <times_key>}`` → one HTML block: per level, a bar per label with
    its value (×N), the ×1 mark, and ``current`` (``level/label``) in bold. Names are
    escaped."""
    one = 100 * bar_share(1.0)
    parts: list[str] = [
        '<div class="hmil-patch-bars" style="font-size:0.85rem">'
        '<div style="color:#5c5f6a;margin-bottom:0.3rem">attention × an average patch '
        "(log axis ×0.1–×100; the tick is ×1)</div>"
    ]
    level = None
    for row in rows:
        if row["level"] != level:
            level = row["level"]
            parts.append(
                f'<div style="margin:0.3rem 0 0.1rem"><i>{html.escape(str(level))}</i></div>'
            )
        value = float(row[times_key])  # type: ignore[arg-type]  # rows hold numbers here
        name = html.escape(str(row["label"]))
        shown = f"<b>{name}</b>" if f"{row['level']}/{row['label']}" == current else name
        width = f"{100 * bar_share(value):.1f}"
        parts.append(
            f'<div style="display:flex;align-items:center;gap:0.5rem;margin:0.1rem 0">'
            f'<span style="flex:0 0 9rem;overflow:hidden;text-overflow:ellipsis;'
            f'white-space:nowrap">{shown}</span>'
            f'<span style="flex:1;position:relative;height:0.55rem;background:{TRACK_COLOUR};'
            f'border-radius:0.2rem"><span style="position:absolute;left:0;top:0;bottom:0;'
            f'width:{width}%;background:{BAR_COLOUR};border-radius:0.2rem"></span>'
            f'<span style="position:absolute;left:{one:.1f}%;top:-0.15rem;bottom:-0.15rem;'
            f'width:1px;background:#262730"></span></span>'
            f'<span style="flex:0 0 3.6rem;text-align:right">{_times(value)}</span></div>'
        )
    parts.append("</div>")
    return "".join(parts)


def _times(value: float) -> str:
    """``value`` as a multiple of an average patch, 2 significant digits (``<×0.01`` below)."""
    if value >= 100:
        return f"×{value:.0f}"
    if value >= 0.01:
        return f"×{value:.2g}" if value < 10 else f"×{value:.1f}"
    return "<×0.01"
