"""Small plain CNNs for the demonstration models.

Plain 3×3 convolutions + BatchNorm + ReLU (folded into the convolutions at export) and a
global-average-pooled linear head. No depthwise convolutions: per-channel INT8 on CPUs
without VNNI loses little accuracy on dense convolutions, while depthwise layers (MobileNet /
EfficientNet-Lite) are known to suffer under static INT8 quantization.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PlainNet(nn.Module):
    """Strided stages of two conv blocks each, then pooled heads.

    ``heads`` maps output name → width; ``cam_head`` names a 1-wide head whose class-activation
    map (the head's weights applied to the last feature map) is exported as output ``cam``.
    ``sigmoid_heads`` are squashed to [0, 1] inside the graph (regression of a ratio).
    """

    def __init__(
        self,
        widths: tuple[int, ...],
        heads: dict[str, int],
        cam_head: str | None = None,
        sigmoid_heads: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for index, width in enumerate(widths):
            layers.append(block(cin, width, 2))
            if index > 0:  # the full-resolution stem stays a single convolution
                layers.append(block(width, width, 1))
            cin = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.head_names = list(heads)
        self.heads = nn.ModuleDict({name: nn.Linear(cin, n) for name, n in heads.items()})
        self.cam_head = cam_head
        self.sigmoid_heads = sigmoid_heads

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.forward_pooled(x)[0]

    def forward_pooled(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The outputs and the pooled features (training-only auxiliary heads read those)."""
        fmap = self.features(x)
        pooled = self.dropout(F.adaptive_avg_pool2d(fmap, 1).flatten(1))
        outputs = []
        for name in self.head_names:
            out = self.heads[name](pooled)
            outputs.append(torch.sigmoid(out) if name in self.sigmoid_heads else out)
        if self.cam_head is not None:
            weight = self.heads[self.cam_head].weight[:1, :, None, None]
            outputs.append(F.conv2d(fmap, weight))
        return tuple(outputs), pooled


SPECS: dict[str, dict] = {
    "gradability": {
        "widths": (16, 24, 32, 48, 64),
        "heads": {"quality_logits": 3},
        "input": {"crop": "frame", "size": 192, "colour": "field-chroma"},
    },
    "dr": {
        "widths": (16, 32, 48, 64, 96, 128),
        "heads": {"grade_logits": 5, "referable_logit": 1, "dme_logit": 1},
        "cam_head": "referable_logit",
        "input": {"crop": "field", "size": 352, "colour": "field-median"},
    },
    "glaucoma": {
        "widths": (16, 32, 48, 64, 96),
        "heads": {"cdr": 1, "suspect_logit": 1},
        "sigmoid_heads": ("cdr",),
        "input": {"crop": "disc", "size": 128, "disc_extent": 0.3, "colour": "field-median"},
    },
}


def build(task: str) -> PlainNet:
    spec = SPECS[task]
    return PlainNet(
        spec["widths"], spec["heads"], spec.get("cam_head"), tuple(spec.get("sigmoid_heads", ()))
    )


def output_names(task: str) -> list[str]:
    spec = SPECS[task]
    return list(spec["heads"]) + (["cam"] if spec.get("cam_head") else [])
