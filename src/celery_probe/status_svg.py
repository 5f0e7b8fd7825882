"""Inline SVG charts for the status page, drawn by hand so the page needs no script or CDN.

Pure functions from numbers to markup. Runs are evenly spaced along x (a run without a
timestamp still has a place); every mark carries a ``<title>`` that browsers show as a
tooltip and screen readers read, and each chart has a ``<title>``/``<desc>`` pair naming
what it shows. Every text that reaches the markup goes through :func:`html.escape`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

WIDTH = 800
PLOT_LEFT = 56
PLOT_RIGHT = 12
STATUS_COLOURS = {"healthy": "#2e7d32", "degraded": "#e6a100", "down": "#c62828", "unknown": "#78909c"}


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def _x(index: int, count: int) -> float:
    """The centre of slot ``index`` of ``count`` equal slots across the plot."""
    span = WIDTH - PLOT_LEFT - PLOT_RIGHT
    return PLOT_LEFT + span * (index + 0.5) / max(count, 1)


def _open(chart_id: str, height: int, title: str, desc: str, css_class: str) -> list[str]:
    return [
        (f'<svg id="{chart_id}" class="chart {css_class}" viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'preserveAspectRatio="xMidYMid meet" role="img" aria-labelledby="{chart_id}-title {chart_id}-desc">'),
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
    ]


def timeline_svg(chart_id: str, rows: Sequence[tuple[str, Sequence[str | None]]], labels: Sequence[str]) -> str:
    """Coloured bars, one per run, one row per series (``overall``, then each target).

    ``rows`` is ``[(row name, [status per run or None when the run lacks that row])]``;
    ``labels[i]`` describes run ``i`` (its time) for the tooltips and the axis.
    """
    count = len(labels)
    row_height, top = 22, 6
    height = top + row_height * max(len(rows), 1) + 22
    latest = rows[0][1][-1] if rows and rows[0][1] else None
    counts = {s: sum(1 for v in rows[0][1] if v == s) for s in STATUS_COLOURS} if rows else {}
    desc = (f"Status of the last {count} runs, oldest on the left"
            + (f"; latest {latest}" if latest else "")
            + "".join(f"; {n} {s}" for s, n in counts.items() if n))
    parts = _open(chart_id, height, "Status timeline", desc, "timeline")
    slot = (WIDTH - PLOT_LEFT - PLOT_RIGHT) / max(count, 1)
    bar = max(slot - (1 if slot > 3 else 0), 0.5)
    for r, (name, statuses) in enumerate(rows):
        y = top + r * row_height
        parts.append(f'<text class="row-label" x="{PLOT_LEFT - 6}" y="{y + 15}" text-anchor="end">'
                     f'{escape(name[:14])}</text>')
        for i, status in enumerate(statuses):
            if status is None:
                continue
            colour = STATUS_COLOURS.get(status, STATUS_COLOURS["unknown"])
            x = PLOT_LEFT + i * slot
            parts.append(f'<rect class="run status-{escape(status)}" x="{x:.2f}" y="{y}" width="{bar:.2f}" '
                         f'height="{row_height - 4}" fill="{colour}"><title>{escape(labels[i])}: '
                         f'{escape(name)} {escape(status)}</title></rect>')
    parts += _time_axis(labels, height - 6)
    parts.append("</svg>")
    return "\n".join(parts)


def line_chart_svg(chart_id: str, title: str, unit: str, values: Sequence[float | None],
                   labels: Sequence[str], *, missing: str) -> str:
    """A line with a point per run that has a value; a cross on the axis where it has none.

    ``missing`` says in words what a run without a value means (the cross's tooltip).
    """
    count = len(values)
    height, top, bottom = 210, 26, 182
    present = [v for v in values if v is not None]
    ceiling = _nice_ceiling(max(present) if present else 0.0)
    if present:
        desc = (f"{title} of the last {count} runs, oldest on the left: latest "
                f"{_latest_text(values, unit)}, lowest {_fmt(min(present))} {unit}, highest {_fmt(max(present))} {unit}"
                + (f"; {count - len(present)} runs without a value ({missing})" if len(present) < count else ""))
    else:
        desc = f"{title}: no run of the last {count} has a value" + (f" ({missing})" if count else "")
    parts = _open(chart_id, height, title, desc, "line-chart")

    def y_of(value: float) -> float:
        return bottom - (bottom - top) * (value / ceiling if ceiling else 0.0)

    for step in range(5):  # gridlines and their labels
        value = ceiling * step / 4
        y = y_of(value)
        parts.append(f'<line class="grid" x1="{PLOT_LEFT}" y1="{y:.2f}" x2="{WIDTH - PLOT_RIGHT}" y2="{y:.2f}"/>')
        parts.append(f'<text class="axis" x="{PLOT_LEFT - 6}" y="{y + 4:.2f}" text-anchor="end">'
                     f'{escape(_fmt(value))}</text>')
    parts.append(f'<text class="axis unit" x="4" y="14">{escape(unit)}</text>')
    segment: list[str] = []
    segments: list[list[str]] = []
    for i, value in enumerate(values):
        if value is None:
            if segment:
                segments.append(segment)
            segment = []
            continue
        segment.append(f"{_x(i, count):.2f},{y_of(value):.2f}")
    if segment:
        segments.append(segment)
    for points in segments:
        if len(points) > 1:
            parts.append(f'<polyline class="line" points="{" ".join(points)}"/>')
    radius = 3.5 if count <= 120 else 2
    for i, value in enumerate(values):
        x = _x(i, count)
        if value is None:
            parts.append(f'<path class="gap" d="M{x - 3:.2f},{bottom - 3} l6,6 m0,-6 l-6,6">'
                         f"<title>{escape(labels[i])}: {escape(missing)}</title></path>")
        else:
            parts.append(f'<circle class="point" cx="{x:.2f}" cy="{y_of(value):.2f}" r="{radius}">'
                         f"<title>{escape(labels[i])}: {escape(_fmt(value))} {escape(unit)}</title></circle>")
    parts += _time_axis(labels, height - 6)
    parts.append("</svg>")
    return "\n".join(parts)


def _latest_text(values: Sequence[float | None], unit: str) -> str:
    latest = values[-1] if values else None
    return f"{_fmt(latest)} {unit}" if latest is not None else "none"


def _time_axis(labels: Sequence[str], y: int) -> list[str]:
    """The first and the last run's label under the plot."""
    if not labels:
        return [f'<text class="axis" x="{WIDTH / 2}" y="{y}" text-anchor="middle">no runs yet</text>']
    parts = [f'<text class="axis" x="{PLOT_LEFT}" y="{y}" text-anchor="start">{escape(labels[0])}</text>']
    if len(labels) > 1:
        parts.append(f'<text class="axis" x="{WIDTH - PLOT_RIGHT}" y="{y}" text-anchor="end">'
                     f"{escape(labels[-1])}</text>")
    return parts


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if value <= factor * power:
            return float(factor * power)
    return float(10 * power)
