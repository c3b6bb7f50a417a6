"""Monitoring over time: volume, ungradable and referral rates, and input-statistics drift.

Every photograph received in the period counts once, on the UTC day it arrived, for its
*camera* (the calling AE title of a DICOM camera, else "hot folder" or "web upload") and its
*operator* (the user the audit trail's receive event names: the person who uploaded it, or the
sender of a camera / hot-folder photograph such as ``ae:CAMERA1``).

- ungradable rate: share of the photographs the quality gate assessed that it found ungradable;
- referral rate: share of the graded photographs (gradable, with a DR or glaucoma model result)
  showing a referable finding (referable DR, DME or glaucoma suspect); without models it is
  undefined;
- OCT volumes are counted apart (desks/monitoring_oct.py: volume, ungradable rate, signal
  strength and its drift), never in these figures;
- drift: the population stability index (PSI) of brightness and sharpness against the
  validation reference (:mod:`appliance.tools.drift_reference`), over the reference's decile bins:
  ``PSI = Σ (a_i - e_i) · ln(a_i / e_i)`` with shares floored at 1e-4. Below
  ``min_photos`` photographs no PSI is given: sampling noise alone makes small samples look
  drifted (about (bins - 1) / n).

Each day's PSI covers that day and the ``window_days - 1`` days before it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from appliance.capture.decode import OPT_SOP_CLASS
from appliance.config import Settings
from appliance.store import Store

SHIPPED_REFERENCE = Path(__file__).resolve().parents[1] / "monitoring_reference.json"
FLOOR = 1e-4
CAMERA_SOURCES = {"hotfolder": "hot folder", "upload": "web upload", "dicom": "DICOM (no AE)"}


# -- the reference and the index ---------------------------------------------------------------
@dataclass(frozen=True)
class MetricReference:
    name: str
    label: str
    edges: tuple[float, ...]
    proportions: tuple[float, ...]


@dataclass(frozen=True)
class Reference:
    source: str
    n: int
    metrics: dict[str, MetricReference]
    path: str = ""


def load_reference(path: str | Path | None = None) -> Reference:
    """The reference file (``monitoring_reference`` setting), or the shipped one."""
    where = Path(path) if path else SHIPPED_REFERENCE
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
        metrics = {
            name: MetricReference(
                name=name,
                label=str(entry["label"]),
                edges=tuple(float(e) for e in entry["edges"]),
                proportions=tuple(float(p) for p in entry["proportions"]),
            )
            for name, entry in data["metrics"].items()
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{where}: not a usable monitoring reference ({exc})") from None
    for entry in metrics.values():
        if len(entry.proportions) != len(entry.edges) + 1:
            raise ValueError(f"{where}: {entry.name} needs one more share than edges")
    return Reference(str(data.get("source", "")), int(data.get("n", 0)), metrics, str(where))


def shares(values: Sequence[float], edges: Sequence[float]) -> list[float]:
    """Share of ``values`` in each bin: (-inf, e1), [e1, e2), ..., [ek, inf)."""
    counts = [0] * (len(edges) + 1)
    for value in values:
        low, high = 0, len(edges)
        while low < high:  # bisect_right
            middle = (low + high) // 2
            if value < edges[middle]:
                high = middle
            else:
                low = middle + 1
        counts[low] += 1
    total = len(values)
    return [c / total if total else 0.0 for c in counts]


def psi(expected: Sequence[float], actual: Sequence[float], floor: float = FLOOR) -> float:
    """Population stability index of ``actual`` bin shares against ``expected``."""
    if len(expected) != len(actual):
        raise ValueError(f"{len(expected)} expected shares but {len(actual)} actual ones")
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, floor), max(a, floor)
        total += (a - e) * math.log(a / e)
    return total


@dataclass(frozen=True)
class Drift:
    """One metric's PSI over a set of photographs, or why there is none."""

    metric: str
    n: int
    value: float | None
    alert: bool
    note: str = ""

    @property
    def words(self) -> str:
        if self.value is None:
            return self.note
        return f"{self.value:.3f} ({'ALERT: drifted' if self.alert else 'ok'})"


def drift(
    metric: MetricReference, values: Sequence[float], *, min_photos: int, alert: float
) -> Drift:
    if len(values) < max(min_photos, 1):
        return Drift(metric.name, len(values), None, False, f"too few photographs ({len(values)})")
    value = psi(metric.proportions, shares(values, metric.edges))
    return Drift(metric.name, len(values), round(value, 4), value >= alert)


# -- photographs and their summaries -----------------------------------------------------------
@dataclass(frozen=True)
class Photo:
    capture_id: int
    day: str  # YYYY-MM-DD (UTC)
    camera: str
    operator: str
    assessed: bool
    gradable: bool
    graded: bool
    referred: bool
    metrics: dict[str, float] = field(default_factory=dict)
    human_grading: bool = False  # gradable, but the models' results were withheld for a person


def camera_of(source: str, calling_ae: str | None) -> str:
    if calling_ae:
        return f"{calling_ae} (DICOM)"
    return CAMERA_SOURCES.get(source, source)


def photos(store: Store, since: str, until: str) -> list[Photo]:
    """Photographs received on days ``since``..``until`` (inclusive, YYYY-MM-DD, UTC); OCT
    volumes are left out (their quality is not a photograph's)."""
    after, before = since, (date.fromisoformat(until) + timedelta(days=1)).isoformat()
    rows = store.query(
        "SELECT c.id, c.received_at, c.source, c.calling_ae, q.gradable, "
        "json_extract(q.metrics, '$.brightness') AS brightness, "
        "json_extract(q.metrics, '$.focus') AS focus, "
        "json_extract(r.payload, '$.finding.referable') AS referable, "
        "json_extract(r.payload, '$.finding.dme') AS dme, "
        "json_extract(r.payload, '$.finding.glaucoma_suspect') AS glaucoma_suspect, "
        "json_extract(r.payload, '$.screening.status') AS screening "
        "FROM captures c LEFT JOIN quality_reports q ON q.capture_pk = c.id "
        "LEFT JOIN results r ON r.id = (SELECT max(id) FROM results "
        "  WHERE capture_pk = c.id AND kind = 'screening') "
        "WHERE c.received_at >= ? AND c.received_at < ? "
        "AND coalesce(c.sop_class_uid, '') != ? ORDER BY c.id",  # photographs; OCT: not yet
        (after, before, OPT_SOP_CLASS),
    )
    ids = [int(row["id"]) for row in rows]
    senders = _senders(store, after, min(ids), max(ids)) if ids else {}
    out = []
    for row in rows:
        flags = [row["referable"], row["dme"], row["glaucoma_suspect"]]
        assessed = row["gradable"] is not None
        gradable = bool(row["gradable"])
        graded = gradable and any(flag is not None for flag in flags)
        metrics = {
            name: float(row[name]) for name in ("brightness", "focus") if row[name] is not None
        }
        out.append(
            Photo(
                capture_id=int(row["id"]),
                day=str(row["received_at"])[:10],
                camera=camera_of(str(row["source"]), row["calling_ae"]),
                operator=senders.get(int(row["id"]), "unknown"),
                assessed=assessed,
                gradable=gradable,
                graded=graded,
                referred=graded and any(bool(flag) for flag in flags),
                metrics=metrics,
                human_grading=gradable and row["screening"] == "human_grading",
            )
        )
    return out


def _senders(store: Store, after: str, first: int, last: int) -> dict[int, str]:
    """capture id → the user named by its first receive event (action C) in the audit trail.

    A receive event is written with its capture, never before it arrived: ``after`` bounds the
    scan from below."""
    rows = store.query(
        "SELECT json_extract(detail, '$.capture_id') AS capture_id, user_id FROM audit_events "
        "WHERE action = 'C' AND event_time >= ? "
        "AND json_extract(detail, '$.capture_id') BETWEEN ? AND ? ORDER BY seq",
        (after, first, last),
    )
    out: dict[int, str] = {}
    for row in rows:
        out.setdefault(int(row["capture_id"]), str(row["user_id"]))
    return out


@dataclass(frozen=True)
class Rates:
    label: str
    photos: int
    assessed: int
    ungradable: int
    graded: int
    referred: int
    drift: dict[str, Drift]
    human_grading: int = 0

    @property
    def human_grading_rate(self) -> float | None:
        """Share of the gradable photographs whose results were withheld for human grading."""
        gradable = self.assessed - self.ungradable
        return self.human_grading / gradable if gradable else None

    @property
    def ungradable_rate(self) -> float | None:
        return self.ungradable / self.assessed if self.assessed else None

    @property
    def referral_rate(self) -> float | None:
        return self.referred / self.graded if self.graded else None

    @property
    def alert(self) -> bool:
        return any(d.alert for d in self.drift.values())


def rates(
    label: str,
    group: Sequence[Photo],
    reference: Reference,
    *,
    min_photos: int,
    alert: float,
    drift_over: Sequence[Photo] | None = None,
) -> Rates:
    over = group if drift_over is None else drift_over
    return Rates(
        label=label,
        photos=len(group),
        assessed=sum(p.assessed for p in group),
        ungradable=sum(p.assessed and not p.gradable for p in group),
        graded=sum(p.graded for p in group),
        referred=sum(p.referred for p in group),
        human_grading=sum(p.human_grading for p in group),
        drift={
            name: drift(
                metric,
                [p.metrics[name] for p in over if name in p.metrics],
                min_photos=min_photos,
                alert=alert,
            )
            for name, metric in reference.metrics.items()
        },
    )


@dataclass(frozen=True)
class Histogram:
    metric: str
    label: str
    edges: tuple[float, ...]
    expected: tuple[float, ...]
    actual: tuple[float, ...]
    n: int


@dataclass(frozen=True)
class Report:
    start: str
    end: str
    window_days: int
    min_photos: int
    alert_at: float
    reference: Reference
    days: list[Rates]  # label = the day; drift over the trailing window
    cameras: list[Rates]
    operators: list[Rates]
    total: Rates
    latest: Rates  # the last window_days days, all photographs
    histograms: list[Histogram]
    camera: str | None = None
    operator: str | None = None
    alerts: list[str] = field(default_factory=list)


def _by(items: Iterable[Photo], key: str) -> dict[str, list[Photo]]:
    out: dict[str, list[Photo]] = {}
    for item in items:
        out.setdefault(getattr(item, key), []).append(item)
    return dict(sorted(out.items()))


def report(
    store: Store,
    reference: Reference,
    *,
    end: date,
    days: int = 30,
    window_days: int = 7,
    min_photos: int = 100,
    alert: float = 0.25,
    camera: str | None = None,
    operator: str | None = None,
) -> Report:
    """The monitoring page's numbers for ``days`` days ending with ``end`` (UTC dates)."""
    days, window_days = max(days, 1), max(window_days, 1)
    first = end - timedelta(days=days - 1)
    loaded = photos(store, (first - timedelta(days=window_days - 1)).isoformat(), end.isoformat())
    start = first.isoformat()
    period = [p for p in loaded if p.day >= start]
    chosen = [
        p
        for p in loaded
        if (camera is None or p.camera == camera) and (operator is None or p.operator == operator)
    ]
    opts: dict[str, Any] = {"min_photos": min_photos, "alert": alert}
    series = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        label = day.isoformat()
        since = (day - timedelta(days=window_days - 1)).isoformat()
        series.append(
            rates(
                label,
                [p for p in chosen if p.day == label],
                reference,
                drift_over=[p for p in chosen if since <= p.day <= label],
                **opts,
            )
        )
    recent_from = (end - timedelta(days=window_days - 1)).isoformat()
    latest = rates("latest", [p for p in period if p.day >= recent_from], reference, **opts)
    result = Report(
        start=start,
        end=end.isoformat(),
        window_days=window_days,
        min_photos=min_photos,
        alert_at=alert,
        reference=reference,
        days=series,
        cameras=[rates(k, v, reference, **opts) for k, v in _by(period, "camera").items()],
        operators=[rates(k, v, reference, **opts) for k, v in _by(period, "operator").items()],
        total=rates("all", period, reference, **opts),
        latest=latest,
        histograms=[
            Histogram(
                metric=name,
                label=metric.label,
                edges=metric.edges,
                expected=metric.proportions,
                actual=tuple(
                    shares([p.metrics[name] for p in period if name in p.metrics], metric.edges)
                ),
                n=sum(name in p.metrics for p in period),
            )
            for name, metric in reference.metrics.items()
        ],
        camera=camera,
        operator=operator,
    )
    result.alerts.extend(alerts(result))
    return result


def alerts(result: Report) -> list[str]:
    """Plain-words drift alerts: the latest window overall, then each camera and operator."""
    labels = {name: m.label.split(":")[0] for name, m in result.reference.metrics.items()}
    out = []
    scopes = [(f"all photographs, last {result.window_days} days", result.latest)]
    scopes += [(f"camera {r.label}", r) for r in result.cameras]
    scopes += [(f"operator {r.label}", r) for r in result.operators]
    for scope, rows in scopes:
        for name, found in rows.drift.items():
            if found.alert and found.value is not None:
                out.append(
                    f"{labels[name]} has drifted from the validation reference ({scope}): "
                    f"PSI {found.value:.3f} ≥ {result.alert_at:g} over {found.n} photographs"
                )
    return out


class MonitoringDesk:
    """The monitoring page's numbers as the admin console asks for them, with the settings'
    period, window, minimum and alert level; built once with the services."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def reference(self) -> tuple[Reference | None, str]:
        """The reference in use, or None and why it cannot be read."""
        try:
            return load_reference(self.settings.monitoring_reference or None), ""
        except ValueError as exc:
            return None, str(exc)

    def report(
        self, *, camera: str | None = None, operator: str | None = None
    ) -> tuple[Report | None, str]:
        """The report up to today (UTC), or None and why there is none."""
        s = self.settings
        reference, problem = self.reference()
        if reference is None:
            return None, problem
        return (
            report(
                self.store,
                reference,
                end=datetime.now(UTC).date(),
                days=s.monitoring_days,
                window_days=s.monitoring_psi_window_days,
                min_photos=s.monitoring_psi_min_photos,
                alert=s.monitoring_psi_alert,
                camera=camera,
                operator=operator,
            ),
            "",
        )
