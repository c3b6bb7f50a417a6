"""Settings as the admin console shows, checks and saves them.

Shown: every effective setting, secrets masked (``api_token``, destination passwords and any
setting named ``*_token``, ``*_password`` or ``*_secret``); a secret is only ever said to be
"set" or "not set".

Saved: an admin pastes settings in TOML (top-level ``name = value`` and ``[[destinations]]``
tables, as in the appliance's configuration file). They are checked the way the appliance
checks them at start — TOML syntax, known names, types, destination tables — plus what would
otherwise only fail later (the guideline rule file loads and passes its safety check, the TLS
certificate and key come as a pair and exist, the model folder exists, the login rate limit
parses, the monitoring reference loads). Only a file that passes is written, atomically, to
``<data_dir>/settings.toml`` (:data:`appliance.config.SAVED_SETTINGS`), which
:func:`appliance.config.load` reads at the next start, after the ``--config`` file and before
``APPLIANCE_*`` environment variables (those still win). Nothing changes in the running
process: the console says "restart to apply". ``data_dir`` cannot be set there (the file lives
in it). Saving and removing the file are audited as configuration changes (110113 / 110131),
naming the settings changed but never their values.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tomllib
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance import config
from appliance.audit import AuditEvent, AuditTrail, events
from appliance.config import SAVED_SETTINGS, Settings
from appliance.store import Store
from appliance.store.blobs import write_atomic

LOGGER = logging.getLogger(__name__)
MASK = "•••••• (set)"
NOT_SET = "(not set)"
NOT_HERE = {
    "data_dir": "the saved file lives in the data directory: set data_dir in the appliance's "
    "own configuration file"
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def is_secret(name: str) -> bool:
    return name.endswith(("token", "password", "secret"))


def shown(name: str, value: Any) -> str:
    """A setting's value as the console may show it."""
    if is_secret(name):
        return MASK if value else NOT_SET
    if name == "destinations":
        return ", ".join(d.name for d in value) or "(none)"
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value) or "(empty)"
    if value == "":
        return "(empty)"
    return str(value)


def effective(settings: Settings) -> list[dict[str, Any]]:
    """Every setting: name, value as shown, default as shown, whether changed, help."""
    out = []
    for f in fields(Settings):
        value = getattr(settings, f.name)
        out.append(
            {
                "name": f.name,
                "value": shown(f.name, value),
                "default": shown(f.name, f.default),
                "changed": value != f.default,
                "help": f.metadata["help"],
                "secret": is_secret(f.name),
            }
        )
    return out


def destinations(settings: Settings) -> list[dict[str, Any]]:
    return [
        {
            "name": d.name,
            "kind": d.kind,
            "address": d.url if d.kind == "stow" else f"{d.host}:{d.port}",
            "ae_title": d.ae_title,
            "username": d.username,
            "password": MASK if d.password else NOT_SET,
            "timeout": d.timeout,
        }
        for d in settings.destinations
    ]


# -- checking and saving -----------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    ok: bool
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # name, now, at restart
    keys: list[str] = field(default_factory=list)


def check(text: str, current: Settings, environ: dict[str, str] | None = None) -> Check:
    """Check pasted TOML settings against ``current``; errors in words, never an exception."""
    env = dict(os.environ if environ is None else environ)
    if not text.strip():
        return Check(False, ["nothing was pasted: paste settings in TOML, e.g. web_port = 8443"])
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return Check(False, [f"not valid TOML: {exc}"])
    kinds = {f.name: f.type for f in fields(Settings)}
    errors: list[str] = []
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in NOT_HERE:
            errors.append(f"{key} cannot be set here: {NOT_HERE[key]}")
        elif key not in kinds:
            errors.append(f"unknown setting {key!r} (docs/settings.md lists them all)")
        else:
            try:
                values[key] = config._coerce(key, kinds[key], value)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
    if errors:
        return Check(False, errors, keys=sorted(table))
    merged = current.replace(**values)
    known = _consistency(current)  # the running settings' own problems are not the paste's
    errors = [e for e in _consistency(merged) if e not in known]
    warnings = [
        f"the environment variable {config.ENV_PREFIX}{key.upper()} is set and will still win "
        f"over the saved {key}"
        for key in sorted(values)
        if config.ENV_PREFIX + key.upper() in env and key != "destinations"
    ]
    if "models_dir" in values and not merged.models_path.is_dir():
        warnings.append(
            f"models_dir: there is no folder {merged.models_dir}: no screening model would load"
        )
    changes = [
        (key, shown(key, getattr(current, key)), shown(key, values[key]))
        for key in sorted(values)
        if getattr(current, key) != values[key]
    ]
    return Check(not errors, errors, warnings, changes, sorted(values))


def _consistency(s: Settings) -> list[str]:
    """What would only fail at start or later: files that must exist and load, pairs."""
    errors: list[str] = []
    if bool(s.web_tls_cert) != bool(s.web_tls_key):
        errors.append("web_tls_cert and web_tls_key go together: set both or neither")
    for name in ("web_tls_cert", "web_tls_key"):
        path = getattr(s, name)
        if path and not Path(path).is_file():
            errors.append(f"{name}: there is no file {path}")
    if s.model_variant not in ("int8", "fp32"):
        errors.append(f"model_variant must be int8 or fp32, not {s.model_variant!r}")
    if s.log_level.upper() not in LOG_LEVELS:
        errors.append(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {s.log_level!r}")
    for name in ("web_port", "dicom_port", "worklist_port"):
        if not 0 < getattr(s, name) < 65536:
            errors.append(f"{name} must be a port number (1-65535)")
    if s.worklist_host and not s.worklist_ae_title:
        errors.append("worklist_host is set but worklist_ae_title is empty")
    try:
        from limits import parse

        parse(s.web_login_rate_limit)
    except ValueError:
        errors.append(
            f"web_login_rate_limit {s.web_login_rate_limit!r} is not a rate such as 20 per minute"
        )
    try:
        from appliance.outcome import load_rules

        load_rules(Path(s.outcome_rules) if s.outcome_rules else None)
    except ValueError as exc:
        errors.append(f"outcome_rules: {exc}")
    if s.monitoring_reference:
        from appliance.desks.monitoring import load_reference

        try:
            load_reference(s.monitoring_reference)
        except ValueError as exc:
            errors.append(f"monitoring_reference: {exc}")
    return errors


def saved_path(settings: Settings) -> Path:
    return settings.data_path / SAVED_SETTINGS


@dataclass(frozen=True)
class Saved:
    """The saved file as the console describes it (keys only: values may be secret)."""

    path: Path
    keys: list[str]
    modified: str  # ISO 8601, UTC, seconds
    in_effect: bool  # every value in it equals the running setting
    problem: str = ""


def saved(settings: Settings) -> Saved | None:
    path = saved_path(settings)
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
        table = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return Saved(path, [], "", False, f"cannot be read: {exc}")
    result = check(text, settings, environ={})
    return Saved(
        path,
        sorted(table),
        datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds"),
        in_effect=result.ok and not result.changes,
        problem="; ".join(result.errors),
    )


def save(
    text: str, current: Settings, store: Store, audit: AuditTrail, *, user: str, address: str = ""
) -> Check:
    """Check, then write ``<data_dir>/settings.toml`` with an audit event in one transaction."""
    result = check(text, current)
    if not result.ok:
        return result
    data = text.encode("utf-8")
    with store.write() as tx:
        digest = _masked_digest(text)
        audit.record(tx, _event(user, address, "settings_saved", result.keys, sha256_masked=digest))
        write_atomic(saved_path(current), data)  # mkstemp: readable by the service only
    LOGGER.info("settings saved by %s for the next start: %s", user, ", ".join(result.keys))
    return result


def remove(
    current: Settings, store: Store, audit: AuditTrail, *, user: str, address: str = ""
) -> bool:
    """Delete the saved file (the next start uses the configuration file alone); audited."""
    path = saved_path(current)
    if not path.is_file():
        return False
    found = saved(current)
    with store.write() as tx:
        audit.record(tx, _event(user, address, "settings_removed", found.keys if found else []))
        path.unlink()
    return True


def _masked_digest(text: str) -> str:
    """SHA-256 of the saved settings with every secret value replaced, so the audit trail can
    tell versions apart without giving anyone a hash to guess a token or password against."""

    def mask(node: Any, name: str = "") -> Any:
        if isinstance(node, dict):
            return {key: mask(value, key) for key, value in node.items()}
        if isinstance(node, list):
            return [mask(item, name) for item in node]
        return "<secret>" if is_secret(name) and node not in ("", None) else node

    canonical = json.dumps(mask(tomllib.loads(text)), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _event(user: str, address: str, change: str, keys: list[str], **extra: Any) -> AuditEvent:
    detail = {"settings": keys, "restart_required": True, **extra}
    return events.configuration_changed(events.Who(user, address), change, detail)


class SiteSettingsDesk:
    """Settings as the admin console shows, checks, saves and removes them (audited); built
    once with the services and the settings the appliance runs with."""

    def __init__(self, store: Store, audit: AuditTrail, settings: Settings) -> None:
        self.store = store
        self.audit = audit
        self.settings = settings

    def effective(self) -> list[dict[str, Any]]:
        return effective(self.settings)

    def destinations(self) -> list[dict[str, Any]]:
        return destinations(self.settings)

    def saved(self) -> Saved | None:
        return saved(self.settings)

    def check(self, text: str) -> Check:
        return check(text, self.settings)

    def save(self, text: str, *, user: str, address: str = "") -> Check:
        return save(text, self.settings, self.store, self.audit, user=user, address=address)

    def remove(self, *, user: str, address: str = "") -> bool:
        return remove(self.settings, self.store, self.audit, user=user, address=address)
