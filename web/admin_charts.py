"""Geometry for the admin console's server-rendered SVG charts (drawn by admin/_chart.html).

No JavaScript and no library: numbers in, rectangles, polylines and labels out. Every chart
also has a table of its numbers next to it, and series differ by shape (bars, outlined bars,
circles, triangles for values past the alert line), never by colour alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.desks.monitoring_oct import OctReport

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 36
MAX_X_LABELS = 8


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    cls: str
    label: str


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    alert: bool
    label: str


@dataclass
class Chart:
    title: str
    desc: str
    width: int = WIDTH
    height: int = HEIGHT
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    x_labels: list[tuple[float, str]] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # polyline "x,y x,y" strings
    points: list[Point] = field(default_factory=list)
    threshold: tuple[float, str] | None = None
    legend: list[tuple[str, str]] = field(default_factory=list)  # (css class, words)
    empty: bool = False

    @property
    def plot_left(self) -> int:
        return LEFT

    @property
    def plot_right(self) -> int:
        return self.width - RIGHT

    @property
    def plot_bottom(self) -> int:
        return self.height - BOTTOM


def _nice_top(value: float) -> float:
    """The top of the y axis: four equal steps of 1, 2 or 5 × 10^k covering ``value``."""
    if value <= 0:
        return 1.0
    quarter = value / 4
    exponent = 10 ** math.floor(math.log10(quarter))
    step = next(m * exponent for m in (1, 2, 5, 10) if quarter <= m * exponent * (1 + 1e-9))
    return float(step * 4)


def _fmt(value: float, percent: bool) -> str:
    if percent:
        return f"{value * 100:.3g}%"
    return f"{value:.3g}"


def _frame(chart: Chart, top: float, percent: bool) -> None:
    span = HEIGHT - TOP - BOTTOM
    for i in range(5):
        value = top * i / 4
        chart.y_ticks.append((HEIGHT - BOTTOM - span * i / 4, _fmt(value, percent)))


def _y(value: float, top: float) -> float:
    return round(HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * min(value, top) / top, 2)


def _x_labels(chart: Chart, centres: Sequence[float], labels: Sequence[str]) -> None:
    every = max(1, math.ceil(len(labels) / MAX_X_LABELS))
    last = len(labels) - 1
    for i, (x, label) in enumerate(zip(centres, labels, strict=True)):
        if (last - i) % every == 0:  # counted from the newest, which is always labelled
            chart.x_labels.append((x, label))


def _slots(n: int) -> tuple[list[float], float]:
    width = (WIDTH - LEFT - RIGHT) / max(n, 1)
    return [round(LEFT + width * (i + 0.5), 2) for i in range(n)], width


def bars(
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    desc: str,
    short: Sequence[str] | None = None,
) -> Chart:
    """One bar per label (e.g. photographs per day)."""
    chart = Chart(title, desc, empty=not any(values))
    top = _nice_top(max(values, default=0))
    _frame(chart, top, False)
    centres, width = _slots(len(values))
    for x, label, value in zip(centres, labels, values, strict=True):
        y = _y(value, top)
        bar_width, height = round(width * 0.7, 2), round(HEIGHT - BOTTOM - y, 2)
        left = round(x - width * 0.35, 2)
        chart.bars.append(Bar(left, y, bar_width, height, "col", f"{label}: {value:g}"))
    _x_labels(chart, centres, short or labels)
    return chart


def line(
    title: str,
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    desc: str,
    percent: bool = False,
    threshold: float | None = None,
    threshold_label: str = "",
    short: Sequence[str] | None = None,
) -> Chart:
    """A line through the values; gaps where a value is None; an optional alert line."""
    known = [v for v in values if v is not None]
    chart = Chart(title, desc, empty=not known)
    peak = max([*known, threshold * 1.2 if threshold else 0.0], default=0.0)
    top = min(1.0, _nice_top(peak)) if percent else _nice_top(peak)
    _frame(chart, top, percent)
    centres, _ = _slots(len(values))
    run: list[str] = []
    for x, label, value in zip(centres, labels, values, strict=True):
        if value is None:
            if run:
                chart.lines.append(" ".join(run))
            run = []
            continue
        y = _y(value, top)
        run.append(f"{x},{y}")
        alert = threshold is not None and value >= threshold
        shown = _fmt(value, True) if percent else f"{value:.3f}"
        chart.points.append(Point(x, y, alert, f"{label}: {shown}"))
    if run:
        chart.lines.append(" ".join(run))
    if threshold is not None:
        label = threshold_label or f"alert at {threshold:g}"
        chart.threshold = (_y(threshold, top), label)
        chart.legend = [
            ("point", "value"),
            ("point alert", "at or above the alert line"),
            ("alert", f"dashed line: {label}"),
        ]
    _x_labels(chart, centres, short or labels)
    return chart


def histogram(
    title: str,
    labels: Sequence[str],
    expected: Sequence[float],
    actual: Sequence[float],
    *,
    desc: str,
) -> Chart:
    """Reference shares (outlined bars) beside observed shares (solid bars) per bin."""
    chart = Chart(title, desc, empty=not any(actual))
    top = _nice_top(max([*expected, *actual], default=0.0))
    _frame(chart, top, True)
    centres, width = _slots(len(labels))
    for x, label, e, a in zip(centres, labels, expected, actual, strict=True):
        pair = ((-0.4, e, "col reference", "reference"), (0.0, a, "col observed", "observed"))
        for offset, value, cls, who in pair:
            y = _y(value, top)
            left, height = round(x + width * offset, 2), round(HEIGHT - BOTTOM - y, 2)
            words = f"{label} {who}: {value * 100:.1f}%"
            chart.bars.append(Bar(left, y, round(width * 0.4, 2), height, cls, words))
    chart.legend = [("col reference", "validation reference"), ("col observed", "this period")]
    _x_labels(chart, centres, [str(i + 1) for i in range(len(labels))])
    return chart


def oct_charts(report: OctReport) -> dict[str, Any]:
    """The OCT part of the monitoring page: volumes, ungradable rate, signal strength (daily
    median) and, where a reference exists, its PSI."""
    labels = [d.label for d in report.days]
    short = [label[5:] for label in labels]
    span = f"from {report.start} to {report.end} (UTC); the table below lists every number"
    charts: dict[str, Any] = {
        "volume": bars("OCT volumes per day", labels, [d.volumes for d in report.days],
                       desc=f"OCT volumes received per day {span}.", short=short),
        "ungradable": line(
            "OCT ungradable rate per day", labels, [d.ungradable_rate for d in report.days],
            desc=f"Share of assessed OCT volumes found not gradable, per day {span}.",
            percent=True, short=short),
        "signal": line(
            "OCT signal strength per day (median, dB)", labels,
            [d.signal_median for d in report.days],
            desc=f"Median signal strength (dB) of the OCT volumes of each day {span}.",
            short=short),
        "drift": None,
    }  # fmt: skip
    if report.reference is not None:
        charts["drift"] = line(
            "Drift of OCT signal strength (PSI)", labels,
            [d.drift.value if d.drift else None for d in report.days],
            desc=(f"Population stability index of the OCT signal strength against its "
                  f"reference, each day over the last {report.window_days} days {span}."),
            threshold=report.alert_at, threshold_label=f"alert at PSI {report.alert_at:g}",
            short=short,
        )  # fmt: skip
    return charts
