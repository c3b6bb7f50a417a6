"""What every command shares: settings, logging, the store and its audit trail."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from appliance import config


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # Request lines can carry identifiers in URLs: access is recorded in the audit trail instead.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("waitress").setLevel(logging.WARNING)


def settings(args: argparse.Namespace, **overrides: Any) -> config.Settings:
    return config.load(args.config, **overrides)


def open_store(args: argparse.Namespace) -> Any:
    from appliance.audit import AuditTrail
    from appliance.store import Store

    loaded = settings(args)
    data = loaded.data_path
    if not (data / "appliance.db").exists():
        print(f"no database in {data}", file=sys.stderr)
        raise SystemExit(2)
    store = Store(data / "appliance.db")
    return loaded, store, AuditTrail(store, data / "audit.head")


def screener(args: argparse.Namespace, settings: config.Settings) -> Any:
    """The installed (or ``--models``) screening models, as ``screen`` and ``validate`` use."""
    from appliance.inference import Screener
    from appliance.inference.runtime import choose_providers

    models = Path(args.models) if getattr(args, "models", None) else settings.models_path
    providers = choose_providers(
        settings.model_providers, settings.trt_cache_path, settings.trt_fp16
    )
    return Screener.load(
        models, args.variant or settings.model_variant, providers, settings.model_threads
    )


def oct_fluid(args: argparse.Namespace, settings: config.Settings) -> Any:
    """The installed (or ``--models``) ``oct-fluid`` model, or None (classical fluid); a card
    that fails its checks raises ModelIntegrityError, as a refused screening model does."""
    from appliance.inference.oct.fluid_net import FluidNet
    from appliance.inference.runtime import choose_providers

    models = Path(args.models) if getattr(args, "models", None) else settings.models_path
    providers = choose_providers(
        settings.model_providers, settings.trt_cache_path, settings.trt_fp16
    )
    variant = getattr(args, "variant", None) or settings.model_variant
    return FluidNet.find(models, variant, providers, settings.model_threads)
