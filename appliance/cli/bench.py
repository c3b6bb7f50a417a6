"""``appliance bench models / screen / oct / ingest / forward``: the benchmarks (tools/)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from appliance.cli import common


def cmd_bench_models(args: argparse.Namespace) -> int:
    from appliance.tools.bench_models import bench_models

    settings = common.settings(args)
    models = Path(args.models) if args.models else settings.models_path
    return bench_models(models, runs=args.runs, threads=args.threads)


def cmd_bench_screen(args: argparse.Namespace) -> int:
    from appliance.tools.bench_screen import bench_screen

    return bench_screen(n=args.n, as_json=args.json)


def cmd_bench_oct(args: argparse.Namespace) -> int:
    from appliance.tools.bench_oct import bench_oct

    return bench_oct(n=args.n, geometry=args.geometry, as_json=args.json)


def cmd_bench_ingest(args: argparse.Namespace) -> int:
    from appliance.tools.bench_ingest import bench_ingest

    return bench_ingest(n=args.n, width=args.width, height=args.height, rounds=args.rounds)


def cmd_bench_forward(args: argparse.Namespace) -> int:
    from appliance.tools.bench_forward import bench_forward

    return bench_forward(n=args.n, width=args.width, height=args.height, rounds=args.rounds)


def add_parsers(sub: Any) -> None:
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="action", required=True)
    bench_models = bench.add_parser("models", help="per-model latency, FP32 vs INT8")
    bench_models.add_argument("--models", help="models folder (default: the installed models)")
    bench_models.add_argument("--runs", type=int, default=50)
    bench_models.add_argument("--threads", type=int, default=2)
    bench_models.set_defaults(func=cmd_bench_models)
    bench_screen = bench.add_parser("screen", help="capture-to-result latency, RSS, start-up")
    bench_screen.add_argument("--n", type=int, default=30, help="photos per variant")
    bench_screen.add_argument("--json", action="store_true")
    bench_screen.set_defaults(func=cmd_bench_screen)
    oct_bench = bench.add_parser("oct", help="OCT volume: C-STORE to stored result, RSS")
    oct_bench.add_argument("--n", type=int, default=10, help="volumes")
    oct_bench.add_argument("--geometry", default="spectralis49", help="synthetic scan pattern")
    oct_bench.add_argument("--json", action="store_true")
    oct_bench.set_defaults(func=cmd_bench_oct)
    ingest = bench.add_parser("ingest", help="C-STORE throughput: appliance SCP vs dcmtk storescp")
    ingest.add_argument("--n", type=int, default=50, help="OP files per round")
    ingest.add_argument("--width", type=int, default=1632)
    ingest.add_argument("--height", type=int, default=1224)
    ingest.add_argument("--rounds", type=int, default=3)
    ingest.set_defaults(func=cmd_bench_ingest)
    forward = bench.add_parser("forward", help="C-STORE to Orthanc: outbox vs dcmtk storescu")
    forward.add_argument("--n", type=int, default=50, help="OP files per round")
    forward.add_argument("--width", type=int, default=1632)
    forward.add_argument("--height", type=int, default=1224)
    forward.add_argument("--rounds", type=int, default=3)
    forward.set_defaults(func=cmd_bench_forward)
