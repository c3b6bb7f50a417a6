"""ROC and reliability plots drawn with Pillow (no plotting library on the appliance).

Each plot is 640 x 480: a square unit plot area with ticks every 0.2 and a light grid, axis
labels, the diagonal reference line dashed, a legend inside the plot and a panel on the right
with the figures the plot shows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

LOGGER = logging.getLogger(__name__)

SIZE = (640, 480)
_BOX = (72, 44, 72 + 372, 44 + 372)  # plot area: left, top, right, bottom (square)
_CURVE = (31, 101, 170)
_POINT = (200, 70, 20)
_GREY = (128, 128, 128)
_GRID = (228, 228, 228)
_BAR = (190, 214, 236)
_INK = (20, 20, 20)
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size)
    except (OSError, AttributeError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


class _Canvas:
    def __init__(self, title: str, xlabel: str, ylabel: str) -> None:
        self.image = Image.new("RGB", SIZE, "white")
        self.draw = ImageDraw.Draw(self.image)
        self.small, self.text, self.big = _font(12), _font(14), _font(17)
        self.draw.text((SIZE[0] // 2, 14), title, fill=_INK, font=self.big, anchor="mt")
        self._axes(xlabel, ylabel)

    def xy(self, x: float, y: float) -> tuple[float, float]:
        left, top, right, bottom = _BOX
        return left + x * (right - left), bottom - y * (bottom - top)

    def _axes(self, xlabel: str, ylabel: str) -> None:
        left, top, right, bottom = _BOX
        for i in range(6):
            v = i / 5
            gx, gy = self.xy(v, v)
            self.draw.line([(gx, top), (gx, bottom)], fill=_GRID)
            self.draw.line([(left, gy), (right, gy)], fill=_GRID)
            self.draw.line([(gx, bottom), (gx, bottom + 5)], fill=_INK)
            self.draw.line([(left - 5, gy), (left, gy)], fill=_INK)
            label = f"{v:.1f}"
            self.draw.text((gx, bottom + 8), label, fill=_INK, font=self.small, anchor="mt")
            self.draw.text((left - 8, gy), label, fill=_INK, font=self.small, anchor="rm")
        self.draw.rectangle(_BOX, outline=_INK)
        self.draw.text(
            ((left + right) / 2, bottom + 28), xlabel, fill=_INK, font=self.text, anchor="mt"
        )
        box = self.draw.textbbox((0, 0), ylabel, font=self.text)
        flat = Image.new("RGBA", (int(box[2]) + 4, int(box[3]) + 4), (255, 255, 255, 0))
        ImageDraw.Draw(flat).text((2, 2), ylabel, fill=_INK, font=self.text)
        upright = flat.rotate(90, expand=True)
        self.image.paste(upright, (left - 58, (top + bottom - upright.height) // 2), upright)

    def dashed(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        (x0, y0), (x1, y1) = self.xy(*start), self.xy(*end)
        steps = 40
        for i in range(0, steps, 2):
            a, b = i / steps, (i + 1) / steps
            self.draw.line(
                [
                    (x0 + a * (x1 - x0), y0 + a * (y1 - y0)),
                    (x0 + b * (x1 - x0), y0 + b * (y1 - y0)),
                ],
                fill=_GREY,
                width=1,
            )

    def curve(self, xs: Sequence[float], ys: Sequence[float], colour: tuple[int, int, int]) -> None:
        points = [self.xy(x, y) for x, y in zip(xs, ys, strict=True)]
        if len(points) > 1:
            self.draw.line(points, fill=colour, width=3, joint="curve")

    def dot(self, x: float, y: float, colour: tuple[int, int, int], radius: float = 5) -> None:
        px, py = self.xy(x, y)
        self.draw.ellipse(
            [px - radius, py - radius, px + radius, py + radius], fill=colour, outline=_INK
        )

    def legend(self, entries: list[tuple[str, str, tuple[int, int, int]]], inside: bool) -> None:
        """Each entry is (kind: line/dash/dot/bar, text, colour); drawn at the bottom right of
        the plot area (``inside``) or at the bottom of the right-hand panel."""
        width = max(self.draw.textlength(text, font=self.small) for _, text, _ in entries) + 44.0
        height = 20.0 * len(entries) + 8.0
        left, top, right, bottom = 0.0, 0.0, 0.0, 0.0
        if inside:
            right, bottom = _BOX[2] - 8, _BOX[3] - 8
            left, top = right - width, bottom - height
        else:
            left, bottom = _BOX[2] + 12, _BOX[3]
            right, top = left + width, bottom - height
        self.draw.rectangle([left, top, right, bottom], fill="white", outline=_GREY)
        for i, (kind, text, colour) in enumerate(entries):
            y = top + 14 + 20 * i
            if kind == "bar":
                self.draw.rectangle([left + 10, y - 6, left + 28, y + 6], fill=colour)
            elif kind == "dot":
                self.draw.ellipse([left + 15, y - 4, left + 23, y + 4], fill=colour, outline=_INK)
            elif kind == "dash":
                for x in range(0, 24, 6):
                    self.draw.line([(left + 8 + x, y), (left + 11 + x, y)], fill=colour)
            else:
                self.draw.line([(left + 8, y), (left + 32, y)], fill=colour, width=3)
            self.draw.text((left + 38, y), text, fill=_INK, font=self.small, anchor="lm")

    def panel(self, lines: list[str]) -> None:
        x, y = _BOX[2] + 16, _BOX[1] + 4
        for line in lines:
            self.draw.text((x, y), line, fill=_INK, font=self.text)
            y += 21

    def save(self, path: Path) -> None:
        self.image.save(path, format="PNG")
        LOGGER.info("wrote %s", path)


def _fmt(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float | int) else "n/a"


def roc_png(
    path: Path,
    *,
    title: str,
    roc: dict[str, list[float]],
    auroc: dict[str, object],
    operating_point: tuple[float, float] | None,
    positive: str,
) -> None:
    """ROC curve with the chance diagonal and the model's operating point."""
    canvas = _Canvas(
        title, "1 - specificity (false positive rate)", "sensitivity (true positive rate)"
    )
    canvas.dashed((0, 0), (1, 1))
    canvas.curve(roc["fpr"], roc["tpr"], _CURVE)
    low, high = auroc.get("ci_low"), auroc.get("ci_high")
    entries = [("line", f"model ROC, AUROC {_fmt(auroc.get('value'))}", _CURVE)]
    panel = [f"AUROC {_fmt(auroc.get('value'))}"]
    if low is not None:
        panel.append(f"95% CI {_fmt(low)} to {_fmt(high)}")
    panel += [
        "positive class:",
        f"  {positive}",
        f"{auroc.get('n_positive')} positive",
        f"{auroc.get('n_negative')} negative",
    ]
    if operating_point is not None:
        canvas.dot(*operating_point, _POINT)
        entries.append(("dot", "operating point", _POINT))
        panel += ["", "Operating point", f"sensitivity {_fmt(operating_point[1])}"]
        panel.append(f"specificity {_fmt(1 - operating_point[0])}")
    entries.append(("dash", "chance", _GREY))
    canvas.legend(entries, inside=True)
    canvas.panel(panel)
    canvas.save(path)


def calibration_png(
    path: Path, *, title: str, bins: list[dict[str, object]], ece: float | None, n: int
) -> None:
    """Reliability diagram: observed fraction against mean predicted probability per bin, with
    bars showing how many images fall in each bin."""
    canvas = _Canvas(title, "mean predicted probability", "observed fraction positive")
    most = max((int(b["n"]) for b in bins if isinstance(b["n"], int)), default=0) or 1
    for b in bins:
        count = b["n"]
        if not isinstance(count, int) or count == 0:
            continue
        low, high = float(b["bin_low"]), float(b["bin_high"])  # type: ignore[arg-type]
        (x0, y0), (x1, y1) = canvas.xy(low, 0), canvas.xy(high, 0.3 * count / most)
        bottom = y0 - 1
        canvas.draw.rectangle([x0 + 2, min(y1, bottom), x1 - 2, bottom], fill=_BAR)
    canvas.dashed((0, 0), (1, 1))
    points = [
        (float(b["mean_predicted"]), float(b["observed"]))  # type: ignore[arg-type]
        for b in bins
        if b["mean_predicted"] is not None and b["observed"] is not None
    ]
    canvas.curve([p[0] for p in points], [p[1] for p in points], _CURVE)
    for x, y in points:
        canvas.dot(x, y, _CURVE, radius=4)
    entries = [
        ("line", "model (bin means)", _CURVE),
        ("dash", "perfect calibration", _GREY),
        ("bar", f"images per bin (max {most})", _BAR),
    ]
    canvas.legend(entries, inside=False)
    canvas.panel([f"ECE {_fmt(ece)}", f"n = {n}", "10 equal-width bins"])
    canvas.save(path)
