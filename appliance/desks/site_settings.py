"""Settings as the admin console shows, checks and saves them.

Shown: every effective setting, secrets masked (``api_token``, destination passwords and any
setting named ``*_token``, ``*_password`` or ``*_secret``); a secret is only ever said to be
"set" or "not set".

Saved: an admin edits settings one by one in a form pre-filled with what the next start will
use (the running value, or the value already saved and waiting for a restart; a secret's field
is left empty and the secret kept unless a new value is typed), or pastes settings in TOML
(top-level ``name = value`` and ``[[destinations]]`` tables, as in the appliance's
configuration file). Either way only the settings edited change: they are merged into the
saved file and every other saved setting stays. Each value is read with the setting's declared
type (:mod:`appliance.config`); unknown names are refused. The merged file is checked the way
the appliance checks its settings at start — TOML syntax, known names, types, destination
tables — plus what would otherwise only fail later (the guideline rule file loads and passes
its safety check, the TLS certificate and key come as a pair and exist, the model folder
exists, the login rate limit parses, the monitoring reference loads). Only a file that passes
is written, atomically, to ``<data_dir>/settings.toml`` (:data:`appliance.config.SAVED_SETTINGS`),
which :func:`appliance.config.load` reads at the next start, after the ``--config`` file and
before ``APPLIANCE_*`` environment variables (those still win).

Every setting is read once, at start (:func:`appliance.config.load`): none changes in the
running process, so every saved change needs a restart and the console says so. ``data_dir``
cannot be set there (the file lives in it). Each changed setting is audited as a configuration
change (110113 / 110131) with its name and old → new value, a secret's value masked; the save
as a whole is audited with the names it changed, and removing the file with the names it held.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance import config
from appliance.audit import AuditEvent, AuditTrail, events
from appliance.config import SAVED_SETTINGS, Settings
from appliance.desks import settings_file
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
MULTILINE = ("clinic_address",)
RESTART = (
    "Every setting is read once, at start: a saved change takes effect after the appliance "
    "restarts."
)


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


SETTING_LINE = re.compile(r"""^\s*["']?([A-Za-z0-9_-]+)["']?\s*=""")


def without_secrets(text: str) -> tuple[str, bool]:
    """Pasted TOML as the page may show it again: every line that sets a token, password or
    secret left out; and whether one was."""
    kept, dropped = [], False
    for line in text.splitlines():
        found = SETTING_LINE.match(line)
        if found and is_secret(found.group(1)):
            dropped = True
        else:
            kept.append(line)
    return "\n".join(kept) + ("\n" if kept and text.endswith("\n") else ""), dropped


def effective(settings: Settings) -> list[dict[str, Any]]:
    """Every setting: name, value as shown, default as shown, whether changed, help; and for
    the form: the value the next start uses (``field``, empty for a secret), the field's kind,
    whether the saved file sets it and, when it differs from the running value, ``next``."""
    table, _ = saved_table(settings)
    upcoming = pending(settings, table)
    out = []
    for f in fields(Settings):
        value, later = getattr(settings, f.name), getattr(upcoming, f.name)
        out.append(
            {
                "name": f.name,
                "value": shown(f.name, value),
                "default": shown(f.name, f.default),
                "changed": value != f.default,
                "help": f.metadata["help"],
                "secret": is_secret(f.name),
                "field": "" if is_secret(f.name) else settings_file.field_text(later),
                "kind": _kind(f.name, later),
                "saved": f.name in table,
                "next": _changed_to(f.name, value, later) if later != value else "",
            }
        )
    return out


def _kind(name: str, value: Any) -> str:
    if name == "destinations":
        return "table"
    if name in NOT_HERE:
        return "fixed"
    if is_secret(name):
        return "secret"
    if isinstance(value, bool):
        return "bool"
    if name in MULTILINE or (isinstance(value, str) and "\n" in value):
        return "multiline"
    return "text"


def _changed_to(name: str, old: Any, new: Any) -> str:
    """The new value as shown; "(changed)" added where the old one is shown alike (secrets)."""
    before, after = shown(name, old), shown(name, new)
    return f"{after} (changed)" if before == after and old != new else after


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
    edited: list[tuple[str, str, str]] = field(default_factory=list)  # saved now: name, old, new
    note: str = ""


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


def saved_table(settings: Settings) -> tuple[dict[str, Any], str]:
    """The saved file's table (empty without a file) and, if it cannot be read, why."""
    try:
        return settings_file.read(saved_path(settings)), ""
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return {}, (
            f"the saved settings file cannot be read ({exc}): remove it below before saving"
        )


def pending(current: Settings, table: Mapping[str, Any]) -> Settings:
    """What the next start uses: the running settings with the saved file's values (those
    that do not read as their type are left out: :func:`saved` reports them)."""
    kinds = {f.name: f.type for f in fields(Settings)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in kinds and key not in NOT_HERE:
            try:
                values[key] = config._coerce(key, kinds[key], value)
            except (TypeError, ValueError):
                continue
    return current.replace(**values)


def check_paste(
    text: str, current: Settings, environ: dict[str, str] | None = None
) -> tuple[Check, dict[str, Any] | None]:
    """Pasted settings checked alone, then merged into the saved file and checked again; the
    merged table comes back when both pass."""
    result = check(text, current, environ)
    if not result.ok:
        return result, None
    table, problem = saved_table(current)
    if problem:
        return Check(False, [problem], keys=result.keys), None
    merged = settings_file.merged(table, tomllib.loads(text))
    result = check(settings_file.dumps(merged), current, environ)
    return result, (merged if result.ok else None)


def save(
    text: str, current: Settings, store: Store, audit: AuditTrail, *, user: str, address: str = ""
) -> Check:
    """Pasted settings merged into ``<data_dir>/settings.toml`` (the settings not pasted stay),
    checked, written with the audit events in one transaction."""
    result = check(text, current)
    if not result.ok:
        return result
    return _write(tomllib.loads(text), current, store, audit, user, address)


def edit(
    values: Mapping[str, str],
    current: Settings,
    store: Store,
    audit: AuditTrail,
    *,
    user: str,
    address: str = "",
) -> Check:
    """Settings edited one by one (``name`` → the text typed), each read with its declared
    type and merged into the saved file; a secret left empty is kept; unknown names refused."""
    if not values:
        return Check(True, note="Nothing was changed: every value is as it was.")
    kinds = {f.name: f.type for f in fields(Settings)}
    errors: list[str] = []
    changes: dict[str, Any] = {}
    for name, text in values.items():
        if name in NOT_HERE:
            errors.append(f"{name} cannot be set here: {NOT_HERE[name]}")
        elif name == "destinations":
            errors.append("destinations are tables: paste them as [[destinations]] in TOML")
        elif name not in kinds:
            errors.append(f"unknown setting {name!r}: nothing was saved (docs/settings.md)")
        elif not (is_secret(name) and text == ""):  # a secret left empty is kept
            try:
                value = config._coerce(name, kinds[name], text.replace("\r\n", "\n"))
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
            else:
                changes[name] = settings_file.toml_value(value)
    if errors:
        return Check(False, errors, keys=sorted(values))
    return _write(changes, current, store, audit, user, address)


def _write(
    changes: dict[str, Any],
    current: Settings,
    store: Store,
    audit: AuditTrail,
    user: str,
    address: str,
) -> Check:
    """Merge ``changes`` into the saved file, check it, write it and audit each setting whose
    next-start value changed — all under the store's one writer, so two saves never lose
    each other's settings."""
    with store.write() as tx:
        table, problem = saved_table(current)
        if problem:
            return Check(False, [problem], keys=sorted(changes))
        merged = settings_file.merged(table, changes)
        text = settings_file.dumps(merged)
        result = check(text, current)
        if not result.ok:
            return result
        before, after = pending(current, table), pending(current, merged)
        edited = [
            (
                name,
                shown(name, getattr(before, name)),
                _changed_to(name, *_pair(before, after, name)),
            )
            for name in sorted(changes)
            if getattr(before, name) != getattr(after, name)
        ]
        if not edited:
            note = "Nothing was changed: the values given are the ones the next start uses."
            return Check(True, [], result.warnings, result.changes, result.keys, [], note)
        who = events.Who(user, address)
        for name, old, new in edited:
            audit.record(tx, events.setting_changed(who, setting=name, old=old, new=new))
        changed = [name for name, _, _ in edited]
        digest = _masked_digest(text)
        audit.record(tx, _event(user, address, "settings_saved", changed, sha256_masked=digest))
        write_atomic(saved_path(current), text.encode("utf-8"))  # mkstemp: the service's only
    LOGGER.info("settings saved by %s for the next start: %s", user, ", ".join(changed))
    return Check(True, [], result.warnings, result.changes, result.keys, edited)


def _pair(before: Settings, after: Settings, name: str) -> tuple[Any, Any]:
    return getattr(before, name), getattr(after, name)


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

    def check_paste(self, text: str) -> Check:
        """Pasted settings checked as they would be saved (merged into the saved file)."""
        return check_paste(text, self.settings)[0]

    def save(self, text: str, *, user: str, address: str = "") -> Check:
        return save(text, self.settings, self.store, self.audit, user=user, address=address)

    def edit(self, values: Mapping[str, str], *, user: str, address: str = "") -> Check:
        return edit(values, self.settings, self.store, self.audit, user=user, address=address)

    def remove(self, *, user: str, address: str = "") -> bool:
        return remove(self.settings, self.store, self.audit, user=user, address=address)
