"""``appliance bench models``: per-model latency, FP32 vs INT8, batch 1, in one run."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import onnxruntime as ort

from appliance.inference import find_cards
from appliance.inference.preprocess import prepare
from appliance.inference.runtime import ModelSession


def bench_models(models_dir: Path, runs: int = 50, threads: int = 2) -> int:
    from appliance.synth import make_fundus

    cards = find_cards(models_dir)
    if not cards:
        print(f"no screening model installed in {models_dir}")
        return 2
    rgb = make_fundus(seed=5, size=(1224, 1632))
    print(f"onnxruntime {ort.__version__}; batch 1; {threads} threads; median of {runs} runs")
    print(f"{'model':<26} {'variant':<6} {'provider':<22} {'median ms':>9} {'p95 ms':>8}")
    for card in cards:
        tensor = prepare(rgb, card.input)
        medians: dict[str, float] = {}
        for variant in ("fp32", "int8"):
            if variant not in card.variants():
                continue
            session = ModelSession(card, variant, ["CPUExecutionProvider"], threads)
            for _ in range(5):
                session.predict(tensor)
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                session.predict(tensor)
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            medians[variant] = statistics.median(times)
            p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
            print(
                f"{card.name:<26} {variant:<6} {session.providers_in_use[0]:<22} "
                f"{medians[variant]:9.2f} {p95:8.2f}"
            )
        if len(medians) == 2:
            print(f"{'':<26} FP32/INT8 latency ratio: {medians['fp32'] / medians['int8']:.2f}")
    return 0
