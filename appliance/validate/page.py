"""The validation report as one self-contained HTML page.

Inline CSS, no JavaScript, no external assets; the plots are PNG files next to the page,
referenced by relative file name. Every value from the report or the model card is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

_TASKS = (
    ("referable_dr", "Referable diabetic retinopathy"),
    ("dme", "Diabetic macular oedema"),
    ("glaucoma", "Glaucoma suspect"),
    ("gradability", "Ungradable image detection"),
)
_FIGURES = (
    ("roc_referable_dr.png", "ROC: referable diabetic retinopathy"),
    ("roc_dme.png", "ROC: diabetic macular oedema"),
    ("roc_glaucoma.png", "ROC: glaucoma suspect"),
    ("roc_gradability.png", "ROC: ungradable image detection"),
    ("calibration_referable_dr.png", "Calibration: p_referable"),
)
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#1b1b1b;
 margin:0 auto;max-width:1120px;padding:24px 28px 48px;line-height:1.45;background:#fff}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.2em;margin:32px 0 8px;border-bottom:2px solid
 #d6dde6;padding-bottom:4px}h3{font-size:1em;margin:18px 0 6px}
.meta,.note{color:#555;font-size:.9em}
.reason{color:#777;font-style:italic;font-size:.85em;display:inline-block;max-width:12em}
.demo{background:#b3261e;color:#fff;padding:14px 18px;border-radius:6px;font-size:1.1em;
 font-weight:600;margin:16px 0}
table{border-collapse:collapse;margin:6px 0 10px;font-size:.93em}
th,td{border:1px solid #cfd6de;padding:5px 9px;text-align:right;vertical-align:top}
th{background:#eef2f6}td.l,th.l{text-align:left}
.v{display:block;font-weight:600}.sub{display:block;color:#555;font-size:.82em;white-space:nowrap}
table.kv td,table.kv th{text-align:left}
.cm td{min-width:3.2em}.cm td.diag{background:#e5f2e5;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:18px}figure{margin:0}
figure img{border:1px solid #cfd6de;width:640px;max-width:100%}figcaption{font-size:.9em;color:#555}
code{font-size:.92em}
@media print{figure,table{break-inside:avoid}.demo{border:3px solid #b3261e}}
"""


_NOTICE_KEYS = ("disclaimer", "status", "intended_use", "warning", "notes")
_NOTICE_WORDS = ("demonstration", "not clinically validated")


def is_demonstration(model_info: object) -> bool:
    """True when the model info, its card or any model it lists says it is a demonstration
    model: a true ``demonstration`` flag, or "demonstration" / "not clinically validated" in a
    ``disclaimer``, ``status``, ``intended_use``, ``warning`` or ``notes`` text, at any depth."""
    if isinstance(model_info, list | tuple):
        return any(is_demonstration(item) for item in model_info)
    if not isinstance(model_info, Mapping):
        return False
    for key, value in model_info.items():
        if key == "demonstration" and value is True:
            return True
        if key in _NOTICE_KEYS and any(w in str(value).lower() for w in _NOTICE_WORDS):
            return True
        if isinstance(value, Mapping | list | tuple) and is_demonstration(value):
            return True
    return False


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _missing(block: Mapping[str, Any] | None) -> str:
    reason = block.get("reason", "not available") if block else "not available"
    return f'<span class="reason">{_e(reason)}</span>'


def pct(block: Mapping[str, Any] | None, inline: bool = False) -> str:
    """A proportion as ``91.2%``, its 95 % CI ``(86.0–94.6%)`` and the fraction ``104/114``,
    stacked for a table cell or on one line (``inline``); the reason when there is no value."""
    if not block or block.get("value") is None:
        return _missing(block)
    parts = [f"{100 * block['value']:.1f}%"]
    if block.get("ci_low") is not None:
        parts.append(f"({100 * block['ci_low']:.1f}&ndash;{100 * block['ci_high']:.1f}%)")
    if block.get("denominator"):
        parts.append(f"{block['numerator']}/{block['denominator']}")
    if inline:
        return " ".join(parts[:2]) + (f", {parts[2]}" if len(parts) > 2 else "")
    return f'<span class="v">{parts[0]}</span>' + "".join(
        f'<span class="sub">{p}</span>' for p in parts[1:]
    )


def num(block: Mapping[str, Any] | None, digits: int = 3, inline: bool = False) -> str:
    """An estimate as ``0.912`` with its 95 % CI ``(0.871–0.948)``; the reason when none."""
    if not block or block.get("value") is None:
        return _missing(block)
    value = f"{block['value']:.{digits}f}"
    if block.get("ci_low") is None:
        return value
    ci = f"({block['ci_low']:.{digits}f}&ndash;{block['ci_high']:.{digits}f})"
    return (
        f"{value} {ci}"
        if inline
        else f'<span class="v">{value}</span><span class="sub">{ci}</span>'
    )


def _table(head: list[str] | None, rows: list[list[str]], cls: str = "") -> str:
    out = [f'<table class="{cls}">' if cls else "<table>"]
    if head is not None:
        out.append("<tr>")
        out += [
            f'<th class="l">{h}</th>' if i == 0 else f"<th>{h}</th>" for i, h in enumerate(head)
        ]
        out.append("</tr>")
    for row in rows:
        cells = [
            f'<td class="l">{c}</td>' if i == 0 else f"<td>{c}</td>" for i, c in enumerate(row)
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _code(value: object) -> str:
    return f"<code>{_e(value)}</code>"


def _model(info: Mapping[str, Any]) -> str:
    """Scalar fields as a table, a list of models (e.g. one per task) as a table with a row
    each, and a nested mapping (e.g. the card) as its own small table."""
    flat = [[_e(k), _code(v)] for k, v in info.items() if not isinstance(v, dict | list)]
    parts = [_table(None, flat, "kv")] if flat else []
    for key, value in info.items():
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            columns = list(
                dict.fromkeys(k for v in value for k in v if not isinstance(v[k], dict | list))
            )
            rows = [[_code(v.get(c, "")) for c in columns] for v in value]
            parts.append(f"<h3>{_e(key)}</h3>{_table([_e(c) for c in columns], rows, 'kv')}")
        elif isinstance(value, Mapping):
            rows = [[_e(k), _code(v)] for k, v in value.items() if not isinstance(v, dict | list)]
            if rows:
                parts.append(f"<h3>{_e(key)}</h3>{_table(None, rows, 'kv')}")
    return "".join(parts) or '<p class="reason">No model information given.</p>'


def _dataset(report: Mapping[str, Any]) -> str:
    rows = [["images measured", str(report["n"])]]
    dataset = report.get("dataset") or {}
    for key in ("format", "dir", "labels", "n_rows"):
        if key in dataset:
            rows.append([_e(key.replace("_", " ")), f"<code>{_e(dataset[key])}</code>"])
    unreadable = report.get("unreadable")
    if unreadable is not None:
        names = ", ".join(_e(u["image"]) for u in unreadable["images"][:20])
        more = " &hellip;" if unreadable["count"] > 20 else ""
        rows.append(["unreadable images (excluded)", f"{unreadable['count']} {names}{more}"])
    rows.append(["imageability (model called gradable)", pct(report.get("imageability"), True)])
    rows.append(["gradable by the reference standard", pct(report.get("imageability_truth"), True)])
    return _table(None, rows, "kv")


def _headline(report: Mapping[str, Any]) -> str:
    head = ["task", "n", "prevalence", "sensitivity", "specificity", "PPV", "NPV", "AUROC"]
    rows, notes = [], []
    for key, name in _TASKS:
        block = report.get(key)
        if block is None:
            rows.append([_e(name)] + ['<span class="reason">not assessed</span>'] * 7)
            continue
        metrics = ("prevalence", "sensitivity", "specificity", "ppv", "npv")
        rows.append(
            [_e(name), str(block["n"])] + [pct(block[m]) for m in metrics] + [num(block["auroc"])]
        )
        excluded = block.get("ungradable_excluded") or {}
        note = f"<b>{_e(name)}</b>: {_e(block['population'])}"
        if excluded.get("total"):
            note += (
                f"; {excluded['total']} ungradable image(s) excluded "
                f"({excluded['truth_ungradable']} by the reference standard, "
                f"{excluded['predicted_ungradable']} by the model)"
            )
        notes.append(f"<li>{note}.</li>")
    return _table(head, rows) + f'<ul class="note">{"".join(notes)}</ul>'


def _confusions(report: Mapping[str, Any]) -> str:
    parts = []
    for key, name in _TASKS:
        block = report.get(key)
        if not block or not block.get("confusion"):
            continue
        c = block["confusion"]
        rows = [
            ["reference positive", f"{c['tp']} (TP)", f"{c['fn']} (FN)"],
            ["reference negative", f"{c['fp']} (FP)", f"{c['tn']} (TN)"],
        ]
        table = _table(["", "model positive", "model negative"], rows)
        parts.append(f"<div><h3>{_e(name)}</h3>{table}</div>")
    return f'<div class="grid">{"".join(parts)}</div>' if parts else "<p>No binary decisions.</p>"


def _dr_grade(block: Mapping[str, Any] | None) -> str:
    if block is None:
        return '<p class="reason">Not assessed: no reference or predicted ICDR grades.</p>'
    head = "".join(f"<th>model {j}</th>" for j in range(5))
    rows = "".join(
        f'<tr><th class="l">reference {i}</th>'
        + "".join(f'<td class="{"diag" if i == j else ""}">{v}</td>' for j, v in enumerate(row))
        + "</tr>"
        for i, row in enumerate(block["confusion_matrix"])
    )
    table = f'<table class="cm"><tr><th></th>{head}</tr>{rows}</table>'
    return (
        f"<p>Quadratic weighted kappa <b>{num(block['quadratic_weighted_kappa'], inline=True)}</b>;"
        f" exact agreement {pct(block['accuracy'], True)}; n = {block['n']}.</p>{table}"
        f'<p class="note">Rows: reference grade; columns: model grade (ICDR 0&ndash;4).</p>'
    )


def _glaucoma(block: Mapping[str, Any] | None) -> str:
    if block is None:
        return '<p class="reason">Not assessed.</p>'
    bias = block.get("cdr_bias")
    bias_text = f"{bias:+.3f}" if isinstance(bias, float) else "n/a"
    return (
        f"<p>Cup-to-disc ratio mean absolute error <b>{num(block['cdr_mae'], inline=True)}</b> "
        f"(bias, model &minus; reference: {bias_text}; n = {block.get('cdr_n', 0)}).</p>"
    )


def _calibration(block: Mapping[str, Any] | None) -> str:
    if block is None:
        return '<p class="reason">Not assessed: no p_referable or no reference labels.</p>'
    rows = [
        [
            f"{b['bin_low']:.1f}&ndash;{b['bin_high']:.1f}",
            str(b["n"]),
            "&ndash;" if b["mean_predicted"] is None else f"{b['mean_predicted']:.3f}",
            "&ndash;" if b["observed"] is None else f"{b['observed']:.3f}",
        ]
        for b in block["bins"]
    ]
    ece = "n/a" if block["ece"] is None else f"{block['ece']:.3f}"
    head = ["p_referable bin", "n", "mean predicted", "observed"]
    return f"<p>Expected calibration error <b>{ece}</b> (n = {block['n']}).</p>{_table(head, rows)}"


def _subgroups(groups: Mapping[str, Any]) -> str:
    if not groups:
        return "<p>No subgroup information in the labels.</p>"
    parts = []
    head = ["value", "n", "sensitivity", "specificity", "AUROC", "CDR MAE", "imageability"]
    for name, values in groups.items():
        rows = []
        for value, entry in values.items():
            ref = entry.get("referable_dr") or {}
            glaucoma = entry.get("glaucoma") or {}
            label = _e(value) + (" &dagger;" if entry["small_sample"] else "")
            rows.append(
                [label, str(entry["n"]), pct(ref.get("sensitivity")), pct(ref.get("specificity"))]
                + [
                    num(ref.get("auroc")),
                    num(glaucoma.get("cdr_mae")),
                    pct(entry.get("imageability")),
                ]
            )
        parts.append(f"<h3>{_e(name)}</h3>{_table(head, rows)}")
    parts.append(
        '<p class="note">Sensitivity, specificity and AUROC are for referable DR. '
        "&dagger; fewer than 10 images: too few to draw conclusions.</p>"
    )
    return "".join(parts)


def render(document: Mapping[str, Any], figures: list[str]) -> str:
    """The whole page for a report document (report + ``title``, ``model``, ``generated_at``)."""
    model = document.get("model") or {}
    title = _e(document.get("title") or "Model validation report")
    banner = ""
    if is_demonstration(model):
        banner = (
            '<div class="demo">DEMONSTRATION MODEL &mdash; not clinically validated. '
            "These figures must not be used to support clinical decisions.</div>"
        )
    shown = [
        f'<figure><img src="{_e(f)}" alt="{_e(c)}" width="640" height="480">'
        f"<figcaption>{_e(c)}</figcaption></figure>"
        for f, c in _FIGURES
        if f in figures
    ]
    methods = document.get("methods") or {}
    sections = [
        ("Model", _model(model)),
        ("Data set", _dataset(document)),
        ("Headline results (95 % confidence intervals)", _headline(document)),
        ("Confusion matrices", _confusions(document)),
        ("Diabetic retinopathy grade", _dr_grade(document.get("dr_grade"))),
        ("Glaucoma: cup-to-disc ratio", _glaucoma(document.get("glaucoma"))),
        ("Calibration of p_referable", _calibration(document.get("calibration"))),
        ("Plots", f'<div class="grid">{"".join(shown)}</div>' if shown else "<p>No plots.</p>"),
        ("Subgroups", _subgroups(document.get("subgroups") or {})),
        ("Methods", _table(None, [[_e(k), _e(v)] for k, v in methods.items()], "kv")),
    ]
    body = "".join(f"<section><h2>{name}</h2>{html}</section>" for name, html in sections)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}</style></head><body>"
        f'<header><h1>{title}</h1><p class="meta">Generated {_e(document.get("generated_at", ""))}'
        f" &middot; report schema {_e(document.get('schema', ''))}</p></header>"
        f"{banner}{body}</body></html>\n"
    )
