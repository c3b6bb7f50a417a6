"""Training loops (PyTorch, CPU) for the three demonstration models."""

from __future__ import annotations

import math
import time

import nets
import numpy as np
import torch
from torch.nn import functional as F

MEAN = [0.5, 0.3, 0.15]
STD = [0.25, 0.18, 0.12]


def to_batch(
    images: np.ndarray, augment: bool, rng: np.random.Generator, task: str | None = None
) -> torch.Tensor:
    x = torch.from_numpy(images).float().div_(255.0)  # N H W C
    if augment and task == "gradability":
        # Geometric only. A brightness gain would move a picture across its own label: the
        # too_bright and too_dark labels are exactly an exposure gain (reject at x1.25, x0.41).
        if rng.random() < 0.5:
            x = x.flip(2)  # mirror
        if rng.random() < 0.5:
            x = x.flip(1)  # upside down: shadows and shifts come from any direction
    elif augment:
        if rng.random() < 0.5:
            x = x.flip(2)  # mirror: a left eye looks like a right eye
        gain = torch.from_numpy(rng.uniform(0.85, 1.15, size=(len(x), 1, 1, 1)).astype(np.float32))
        x = (x * gain).clamp_(0, 1)
    x = (x - torch.tensor(MEAN)) / torch.tensor(STD)
    return x.permute(0, 3, 1, 2).contiguous()


def losses(
    task: str, outputs: tuple[torch.Tensor, ...], y: dict[str, torch.Tensor]
) -> torch.Tensor:
    if task == "gradability":
        return F.cross_entropy(outputs[0], y["quality"])
    if task == "dr":
        grade, referable, dme = outputs[0], outputs[1][:, 0], outputs[2][:, 0]
        return (
            F.cross_entropy(grade, y["dr_grade"])
            + 2.0 * F.binary_cross_entropy_with_logits(referable, y["referable_dr"].float())
            + F.binary_cross_entropy_with_logits(dme, y["dme"].float())
        )
    cdr, suspect = outputs[0][:, 0], outputs[1][:, 0]
    return 20.0 * F.smooth_l1_loss(
        cdr, y["cdr"].float(), beta=0.05
    ) + F.binary_cross_entropy_with_logits(suspect, y["glaucoma_suspect"].float())


AUX_DEFECT_KINDS = 7  # "none" + the six acquisition defects (data.DEFECT_KINDS)


def auxiliary_loss(aux: torch.Tensor, y: dict[str, torch.Tensor]) -> torch.Tensor:
    """Gradability only, training only: which defect, and how strong relative to its reject
    level (``severity`` = strength / reject strength, 0 without a defect, capped at 2). The
    heads are dropped at export; they give the shared features a graded, per-defect signal
    instead of three coarse classes."""
    kind, severity = aux[:, :AUX_DEFECT_KINDS], aux[:, AUX_DEFECT_KINDS]
    return 0.5 * F.cross_entropy(kind, y["defect"]) + F.smooth_l1_loss(
        severity, y["severity"].float(), beta=0.1
    )


def train(
    task: str,
    images: np.ndarray,
    targets: dict[str, np.ndarray],
    epochs: int,
    seed: int,
    batch: int = 32,
    log=print,
) -> torch.nn.Module:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = nets.build(task)
    steps = epochs * math.ceil(len(images) / batch)
    aux_head = None
    params = list(model.parameters())
    if task == "gradability" and "severity" in targets:
        aux_head = torch.nn.Linear(nets.SPECS[task]["widths"][-1], AUX_DEFECT_KINDS + 1)
        params += list(aux_head.parameters())
    optimiser = torch.optim.AdamW(params, lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.15
    )
    y_all = {k: torch.from_numpy(v) for k, v in targets.items()}
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(images))
        total, started = 0.0, time.perf_counter()
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            x = to_batch(images[idx], True, rng, task)
            y = {k: v[idx] for k, v in y_all.items()}
            if aux_head is None:
                loss = losses(task, model(x), y)
            else:
                outputs, pooled = model.forward_pooled(x)
                loss = losses(task, outputs, y) + auxiliary_loss(aux_head(pooled), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        log(
            f"{task} epoch {epoch + 1}/{epochs}: loss {total / len(images):.4f} "
            f"({time.perf_counter() - started:.0f} s)"
        )
    model.eval()
    return model


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, batch: int = 64) -> list[np.ndarray]:
    model.eval()
    outs: list[list[np.ndarray]] = []
    rng = np.random.default_rng(0)
    for start in range(0, len(images), batch):
        result = model(to_batch(images[start : start + batch], False, rng))
        outs.append([r.numpy() for r in result])
    return [np.concatenate([o[i] for o in outs]) for i in range(len(outs[0]))]
