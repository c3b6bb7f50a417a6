"""Monitoring of OCT volumes, apart from the photographs' figures (desks/monitoring.py).

Every OCT (OPT) object received in the period counts once, on the UTC day it arrived:

- volume per day;
- ungradable rate: share of the volumes the OCT quality check assessed (``quality_reports``)
  that it found not gradable; a volume that could not be measured at all (``not_analysed``)
  is counted but not assessed;
- signal strength: the quality check's ``signal_db`` (quality/oct.py), its daily median, and
  its drift as a population stability index (the same PSI as the photographs', over the
  trailing ``window_days``) against a reference — the ``oct_metrics.signal_db`` entry of the
  monitoring reference file (``edges`` and ``proportions`` like the photographs' metrics). The
  shipped file has one, built by ``python -m appliance.tools.drift_reference --part oct`` from
  held-out synthetic volumes sent through the pipeline; a site's own file without one gives
  the series and a page that says there is no reference, rather than inventing one.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from appliance.capture.decode import OPT_SOP_CLASS
from appliance.config import Settings
from appliance.desks.monitoring import SHIPPED_REFERENCE, Drift, MetricReference, drift
from appliance.store import Store

SIGNAL = "signal_db"


@dataclass(frozen=True)
class OctScanStats:
    capture_id: int
    day: str  # YYYY-MM-DD (UTC)
    assessed: bool
    gradable: bool
    signal_db: float | None


@dataclass(frozen=True)
class OctDay:
    label: str
    volumes: int
    assessed: int
    ungradable: int
    signal_median: float | None
    drift: Drift | None  # None: no reference

    @property
    def ungradable_rate(self) -> float | None:
        return self.ungradable / self.assessed if self.assessed else None


@dataclass(frozen=True)
class OctReport:
    start: str
    end: str
    window_days: int
    alert_at: float
    days: list[OctDay]
    total: OctDay
    latest: OctDay  # the last window_days days
    reference: MetricReference | None
    reference_note: str  # where the reference came from, or why there is none
    alerts: list[str] = field(default_factory=list)


def load_oct_reference(path: str | Path | None = None) -> tuple[MetricReference | None, str]:
    """The signal-strength reference (``oct_metrics.signal_db`` of the reference file), or None
    and a sentence saying why there is none."""
    where = Path(path) if path else SHIPPED_REFERENCE
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
        entry = (data.get("oct_metrics") or {}).get(SIGNAL)
        if entry is None:
            return None, (
                f"no OCT signal-strength reference in {where.name}: the series is shown, "
                "no PSI is computed"
            )
        found = MetricReference(
            name=SIGNAL,
            label=str(entry.get("label", "OCT signal strength: dB")),
            edges=tuple(float(e) for e in entry["edges"]),
            proportions=tuple(float(p) for p in entry["proportions"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"{where.name}: not a usable OCT reference ({exc})"
    if len(found.proportions) != len(found.edges) + 1:
        return None, f"{where.name}: the OCT signal reference needs one more share than edges"
    source = data.get("oct_source") or data.get("source") or where.name
    return found, f"{source} ({data.get('oct_n', '?')} volumes)"


def oct_scans(store: Store, since: str, until: str) -> list[OctScanStats]:
    """OCT volumes received on days ``since``..``until`` (inclusive, YYYY-MM-DD, UTC)."""
    before = (date.fromisoformat(until) + timedelta(days=1)).isoformat()
    rows = store.query(
        "SELECT c.id, c.received_at, q.gradable, "
        "json_extract(q.metrics, '$.signal_db') AS signal_db FROM captures c "
        "LEFT JOIN quality_reports q ON q.id = (SELECT max(id) FROM quality_reports "
        "  WHERE capture_pk = c.id) "
        "WHERE c.received_at >= ? AND c.received_at < ? AND c.sop_class_uid = ? ORDER BY c.id",
        (since, before, OPT_SOP_CLASS),
    )
    return [
        OctScanStats(
            capture_id=int(row["id"]),
            day=str(row["received_at"])[:10],
            assessed=row["gradable"] is not None,
            gradable=bool(row["gradable"]),
            signal_db=float(row["signal_db"]) if row["signal_db"] is not None else None,
        )
        for row in rows
    ]


def _day(
    label: str,
    group: Sequence[OctScanStats],
    over: Sequence[OctScanStats],
    reference: MetricReference | None,
    *,
    min_volumes: int,
    alert: float,
) -> OctDay:
    signals = [s.signal_db for s in group if s.signal_db is not None]
    window = [s.signal_db for s in over if s.signal_db is not None]
    found = None
    if reference is not None:
        found = drift(reference, window, min_photos=min_volumes, alert=alert)
        if found.value is None:
            found = Drift(SIGNAL, found.n, None, False, f"too few volumes ({found.n})")
    return OctDay(
        label=label,
        volumes=len(group),
        assessed=sum(s.assessed for s in group),
        ungradable=sum(s.assessed and not s.gradable for s in group),
        signal_median=round(statistics.median(signals), 2) if signals else None,
        drift=found,
    )


def oct_report(
    store: Store,
    reference: MetricReference | None,
    reference_note: str,
    *,
    end: date,
    days: int = 30,
    window_days: int = 7,
    min_volumes: int = 100,
    alert: float = 0.25,
) -> OctReport:
    """The OCT figures for ``days`` days ending with ``end`` (UTC dates)."""
    days, window_days = max(days, 1), max(window_days, 1)
    first = end - timedelta(days=days - 1)
    loaded = oct_scans(store, (first - timedelta(days=window_days - 1)).isoformat(),
                       end.isoformat())  # fmt: skip
    start = first.isoformat()
    period = [s for s in loaded if s.day >= start]
    series = []
    for offset in range(days):
        label = (first + timedelta(days=offset)).isoformat()
        since = (first + timedelta(days=offset - window_days + 1)).isoformat()
        mine = [s for s in loaded if s.day == label]
        over = [s for s in loaded if since <= s.day <= label]
        series.append(_day(label, mine, over, reference, min_volumes=min_volumes, alert=alert))
    recent = [s for s in period if s.day >= (end - timedelta(days=window_days - 1)).isoformat()]
    latest = _day("latest", recent, recent, reference, min_volumes=min_volumes, alert=alert)
    result = OctReport(
        start=start,
        end=end.isoformat(),
        window_days=window_days,
        alert_at=alert,
        days=series,
        total=_day("all", period, period, reference, min_volumes=min_volumes, alert=alert),
        latest=latest,
        reference=reference,
        reference_note=reference_note,
    )
    if latest.drift is not None and latest.drift.alert and latest.drift.value is not None:
        result.alerts.append(
            f"OCT signal strength has drifted from its reference (all OCT volumes, last "
            f"{window_days} days): PSI {latest.drift.value:.3f} ≥ {alert:g} over "
            f"{latest.drift.n} volumes"
        )
    return result


class OctMonitoringDesk:
    """The OCT figures as the admin console's monitoring page asks for them, with the same
    period, window, minimum and alert settings as the photographs'; built once."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def report(self) -> OctReport:
        """Up to today (UTC); the reference from the monitoring reference file in use."""
        s = self.settings
        reference, note = load_oct_reference(s.monitoring_reference or None)
        return oct_report(
            self.store, reference, note, end=datetime.now(UTC).date(), days=s.monitoring_days,
            window_days=s.monitoring_psi_window_days, min_volumes=s.monitoring_psi_min_photos,
            alert=s.monitoring_psi_alert,
        )  # fmt: skip
