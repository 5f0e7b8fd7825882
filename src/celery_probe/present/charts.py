"""Inline SVG charts for the status page, drawn by hand so the page needs no script or CDN.

Pure functions from numbers to markup. Runs are evenly spaced along x (a run without a
timestamp still has a place); every mark carries a ``<title>`` that browsers show as a
tooltip and screen readers read, and each chart has a ``<title>``/``<desc>`` pair naming
what it shows. Every text that reaches the markup goes through :func:`html.escape`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 800
PLOT_LEFT = 56
PLOT_RIGHT = 12
STATUS_COLOURS = {"healthy": "#2e7d32", "degraded": "#e6a100", "down": "#c62828", "unknown": "#78909c"}
# One colour per series, and a dash pattern too, so two series still differ without colour.
SERIES_COLOURS = ("#1565c0", "#c2185b", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f",
                  "#5d4037", "#827717", "#283593", "#d84315", "#00695c", "#455a64")
SERIES_DASHES = ("", "6 3", "2 3")
LEGEND_COLUMNS = 4
LEGEND_NAME = 24  # characters of a name shown in the legend; its tooltip has all of it


@dataclass(frozen=True)
class Series:
    """One line of a chart with several: a value per run, or None where the run has none.

    ``recorded[i]`` is False where run ``i`` holds no figures for this series at all (the
    target was not probed, or the line predates per-target figures): no mark is drawn
    there, where a None that was recorded gets a cross.
    """

    name: str
    values: Sequence[float | None]
    recorded: Sequence[bool]


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

    parts += _grid(ceiling, y_of, unit)
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


def series_chart_svg(chart_id: str, title: str, unit: str, series: Sequence[Series], labels: Sequence[str], *,
                     missing: str, left_out: int = 0) -> str:
    """One line per series (a target), each in its colour and dash, with a legend under the plot.

    As :func:`line_chart_svg`, a run where a series has no value gets a cross on the axis,
    in that series' colour; ``left_out`` says how many series the caller did not draw.
    """
    count = len(labels)
    base, top, bottom = 210, 26, 182
    rows = math.ceil(len(series) / LEGEND_COLUMNS)
    height = base + rows * 18 + (6 if rows else 0)
    present = [v for line in series for v in line.values if v is not None]
    ceiling = _nice_ceiling(max(present) if present else 0.0)
    summaries = [_series_text(line, unit) for line in series]
    desc = (f"{title} of the last {count} runs, one line per target, oldest on the left: "
            + ("; ".join(summaries) if summaries else "no target has a value")
            + (f"; {left_out} more targets not drawn" if left_out else ""))
    parts = _open(chart_id, height, title, desc, "line-chart series-chart")

    def y_of(value: float) -> float:
        return bottom - (bottom - top) * (value / ceiling if ceiling else 0.0)

    parts += _grid(ceiling, y_of, unit)
    radius = 3.5 if count <= 120 else 2
    for index, line in enumerate(series):
        colour, dash = SERIES_COLOURS[index % len(SERIES_COLOURS)], SERIES_DASHES[index % len(SERIES_DASHES)]
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<g class="series" data-series="{index}">')
        for points in _segments(line.values, count, y_of):
            if len(points) > 1:
                parts.append(f'<polyline class="series-line" points="{" ".join(points)}" fill="none" '
                             f'stroke="{colour}" stroke-width="2"{dashed}/>')
        for i, value in enumerate(line.values):
            if i >= count or not line.recorded[i]:
                continue
            x = _x(i, count)
            if value is None:
                parts.append(f'<path class="series-gap" d="M{x - 3:.2f},{bottom - 3} l6,6 m0,-6 l-6,6" '
                             f'stroke="{colour}" stroke-width="2" fill="none">'
                             f"<title>{escape(labels[i])}: {escape(line.name)}: {escape(missing)}</title></path>")
            else:
                parts.append(f'<circle class="series-point" cx="{x:.2f}" cy="{y_of(value):.2f}" r="{radius}" '
                             f'fill="{colour}"><title>{escape(labels[i])}: {escape(line.name)}: '
                             f"{escape(_fmt(value))} {escape(unit)}</title></circle>")
        parts.append("</g>")
    parts += _time_axis(labels, base - 6)
    parts += _legend(series, base + 12)
    parts.append("</svg>")
    return "\n".join(parts)


def _series_text(line: Series, unit: str) -> str:
    values = [v for v, kept in zip(line.values, line.recorded) if kept and v is not None]
    if not values:
        return f"{line.name}: no value"
    return (f"{line.name}: latest {_latest_text(line.values, unit)}, lowest {_fmt(min(values))} {unit}, "
            f"highest {_fmt(max(values))} {unit}")


def _segments(values: Sequence[float | None], count: int, y_of: Callable[[float], float]) -> list[list[str]]:
    """The runs of consecutive values, as polyline points; a missing value breaks the line."""
    segments: list[list[str]] = [[]]
    for i, value in enumerate(values):
        if value is None:
            segments.append([])
        else:
            segments[-1].append(f"{_x(i, count):.2f},{y_of(value):.2f}")
    return [points for points in segments if points]


def _legend(series: Sequence[Series], y: int) -> list[str]:
    """Each series' swatch (its colour and dash) and name, ``LEGEND_COLUMNS`` to a row."""
    if not series:
        return []
    column = (WIDTH - PLOT_LEFT - PLOT_RIGHT) / LEGEND_COLUMNS
    parts = ['<g class="legend">']
    for index, line in enumerate(series):
        x = PLOT_LEFT + column * (index % LEGEND_COLUMNS)
        row_y = y + 18 * (index // LEGEND_COLUMNS)
        colour, dash = SERIES_COLOURS[index % len(SERIES_COLOURS)], SERIES_DASHES[index % len(SERIES_DASHES)]
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        shown = line.name if len(line.name) <= LEGEND_NAME else line.name[:LEGEND_NAME - 1] + "…"
        parts.append(f'<g class="legend-item" data-series="{index}"><title>{escape(line.name)}</title>'
                     f'<line x1="{x:.2f}" y1="{row_y - 4}" x2="{x + 22:.2f}" y2="{row_y - 4}" stroke="{colour}" '
                     f'stroke-width="2"{dashed}/>'
                     f'<text class="axis legend-name" x="{x + 28:.2f}" y="{row_y}">{escape(shown)}</text></g>')
    parts.append("</g>")
    return parts


def _grid(ceiling: float, y_of: Callable[[float], float], unit: str) -> list[str]:
    """Five gridlines with their values, and the unit in the corner."""
    parts = []
    for step in range(5):
        value = ceiling * step / 4
        y = y_of(value)
        parts.append(f'<line class="grid" x1="{PLOT_LEFT}" y1="{y:.2f}" x2="{WIDTH - PLOT_RIGHT}" y2="{y:.2f}"/>')
        parts.append(f'<text class="axis" x="{PLOT_LEFT - 6}" y="{y + 4:.2f}" text-anchor="end">'
                     f'{escape(_fmt(value))}</text>')
    parts.append(f'<text class="axis unit" x="4" y="14">{escape(unit)}</text>')
    return parts


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
