"""The OCT validation report as plain text (``report.txt``): figures with their 95 % CIs and
issue #16's targets, each met or not met."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Block = Mapping[str, Any]


def _num(value: object, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "n/a"


def _ci(block: Block | None, digits: int) -> str:
    if not block or block.get("value") is None:
        reason = (block or {}).get("reason") or "not measured"
        return f"n/a ({reason})"
    shown = _num(block["value"], digits)
    if block.get("ci_low") is not None:
        shown += f" (95% CI {_num(block['ci_low'], digits)}-{_num(block['ci_high'], digits)})"
    return shown


def _proportion(block: Block | None) -> str:
    if not block or block.get("value") is None:
        return _ci(block, 3)
    return f"{_ci(block, 3)} [{block['numerator']}/{block['denominator']}]"


def _binary(title: str, block: Block | None) -> list[str]:
    if not block:
        return [f"{title}: not in this set"]
    lines = [f"{title} ({block['n']} volumes, prevalence {_proportion(block['prevalence'])})"]
    lines.append(f"  sensitivity {_proportion(block['sensitivity'])}")
    lines.append(f"  specificity {_proportion(block['specificity'])}")
    lines.append(f"  PPV {_proportion(block['ppv'])}   NPV {_proportion(block['npv'])}")
    if block.get("auroc") is not None:
        lines.append(f"  AUROC {_ci(block['auroc'], 3)}")
    return lines


def _measurements(report: Block) -> list[str]:
    cst = report["cst"]
    lines = [f"CST MAE {_ci(cst['mae_um'], 1)} µm over {cst['mae_um']['n']} volumes"]
    if cst.get("bias_um") is not None:
        bias, worst = cst["bias_um"], cst["max_abs_error_um"]
        lines[-1] += f"; bias {bias:+.1f} µm, largest error {worst:.1f} µm"
    for name in ("ilm", "rpe"):
        b = report["boundaries"][name]
        lines.append(
            f"{name.upper()} boundary MAE {_ci(b['mae_px'], 2)} px = {_ci(b['mae_um'], 1)} µm"
            f" over {b['mae_px']['n']} volumes"
        )
    return lines


def render_text(report: Block) -> str:
    """Plain text of a ``report.json`` (schema ``appliance.validate.oct/1``)."""
    ds = report.get("dataset") or {}
    excluded = report["ungradable_excluded"]
    lines = [
        report.get("title", "OCT validation"),
        f"measured by: {(report.get('measurement') or {}).get('name', 'n/a')}"
        f" — {(report.get('measurement') or {}).get('status', '')}",
        f"set: {ds.get('dir', 'n/a')} ({ds.get('format', 'n/a')}), {report['n']} volumes;"
        f" labels sha256 {ds.get('labels_sha256') or 'n/a'}; files sha256"
        f" {ds.get('files_sha256', 'n/a')}",
        f"population: {report['population']}; left out: {excluded['truth_ungradable']}"
        f" reference-ungradable, {excluded['predicted_ungradable']} called ungradable",
        "",
        *_measurements(report),
        "",
    ]
    rule = (report.get("ci_dme") or {}).get("rule") or {}
    dme = "Centre-involving DME"
    if rule:
        cst, fluid = rule["cst_threshold_um"], rule["fluid_threshold"]
        dme += f" (CST >= {cst:g} µm or central fluid score >= {fluid:g})"
    lines += _binary(dme, report.get("ci_dme"))
    lines += _binary("Fluid in the central subfield", report.get("fluid_centre"))
    lines += _binary("Fluid anywhere in the scan", report.get("fluid_any"))
    lines += _binary("Quality: ungradable detection", report.get("quality"))
    lines += ["", "Targets (issue #16, point estimates):"]
    for t in report["targets"]:
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[t["met"]]
        lines.append(
            f"  {t['words']}: {_num(t['value'], 3)} {t['comparison']} {t['target']:g}  {verdict}"
        )
    for note in ds.get("notes") or []:
        lines.append(f"note: {note}")
    unreadable = report.get("unreadable") or {}
    if unreadable.get("count"):
        lines.append(f"unreadable volumes: {unreadable['count']}")
        lines += [f"  {u['volume']}: {u['reason']}" for u in unreadable["volumes"]]
    return "\n".join(lines) + "\n"
