"""Settings as the console shows and checks them; the saved file read at the next start."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance import config
from appliance.config import Destination
from appliance.desks import site_settings


def test_secrets_are_never_shown() -> None:
    s = config.load(environ={}, api_token="tok-123456789").replace(
        destinations=(
            Destination(
                "pacs",
                url="https://pacs/dicom-web",
                kind="stow",
                username="u",
                password="pw-987654",
            ),
        )
    )
    shown = " ".join(str(row["value"]) for row in site_settings.effective(s))
    assert "tok-123456789" not in shown and "pw-987654" not in shown
    assert site_settings.shown("api_token", "x") == site_settings.MASK
    assert site_settings.shown("api_token", "") == site_settings.NOT_SET
    assert site_settings.destinations(s)[0]["password"] == site_settings.MASK
    row = next(r for r in site_settings.effective(s) if r["name"] == "api_token")
    assert row["changed"] and row["secret"]


def test_check_collects_every_error_in_words(tmp_path: Path) -> None:
    current = config.load(environ={}, data_dir=str(tmp_path))
    result = site_settings.check(
        'web_port = 99999\nlog_level = "LOUD"\nmodel_variant = "fp16"\n'
        'web_login_rate_limit = "lots"\nworklist_host = "ris"\n',
        current,
        environ={},
    )
    assert not result.ok
    assert result.errors == [
        "model_variant must be int8 or fp32, not 'fp16'",
        "log_level must be one of DEBUG, INFO, WARNING, ERROR, not 'LOUD'",
        "web_port must be a port number (1-65535)",
        "worklist_host is set but worklist_ae_title is empty",
        "web_login_rate_limit 'lots' is not a rate such as 20 per minute",
    ]


def test_check_warns_when_the_environment_still_wins(tmp_path: Path) -> None:
    current = config.load(environ={}, data_dir=str(tmp_path))
    result = site_settings.check(
        "web_port = 8443\n", current, environ={"APPLIANCE_WEB_PORT": "8080"}
    )
    assert result.ok and result.changes == [("web_port", "8080", "8443")]
    assert result.warnings == [
        "the environment variable APPLIANCE_WEB_PORT is set and will still win over the saved "
        "web_port"
    ]


def test_a_broken_saved_file_stops_the_start_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text('data_dir = "/elsewhere"\n')
    with pytest.raises(ValueError, match="setting 'data_dir' is not allowed there"):
        config.load(environ={}, data_dir=str(tmp_path))
    (tmp_path / "settings.toml").write_text("web_port = \n")
    with pytest.raises(ValueError, match="settings.toml: cannot be read"):
        config.load(environ={"APPLIANCE_DATA_DIR": str(tmp_path)})


def test_the_saved_file_comes_after_the_config_file(tmp_path: Path) -> None:
    base = tmp_path / "appliance.toml"
    base.write_text(f'data_dir = "{tmp_path / "data"}"\nweb_port = 9000\ndicom_port = 104\n')
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "settings.toml").write_text("web_port = 9443\n")
    s = config.load(base, environ={})
    assert (s.web_port, s.dicom_port) == (9443, 104)


def test_the_audit_digest_never_covers_a_secret(tmp_path: Path) -> None:
    import json

    from appliance.audit import AuditTrail
    from appliance.store import Store

    current = config.load(environ={}, data_dir=str(tmp_path / "data"))
    current.data_path.mkdir(parents=True)
    store = Store(current.data_path / "appliance.db")
    audit = AuditTrail(store, current.data_path / "audit.head")
    base = 'log_level = "INFO"\n[[destinations]]\nname = "pacs"\nkind = "stow"\nurl = "http://a/"\n'
    for password in ("first-secret", "second-secret"):
        result = site_settings.save(
            base + f'password = "{password}"\n', current, store, audit, user="ann"
        )
        assert result.ok, result.errors
    site_settings.save(base.replace("INFO", "DEBUG"), current, store, audit, user="ann")
    details = [json.loads(r["detail"]) for r in store.query("SELECT detail FROM audit_events")]
    digests = [d["sha256_masked"] for d in details if d.get("change") == "settings_saved"]
    assert digests[0] == digests[1] != digests[2]  # the password is not in it; the level is
    assert all("secret" not in json.dumps(d) for d in details)
    store.close()


# -- editing one setting at a time, merged into the saved file ---------------------------------
@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Any]:
    from appliance.audit import AuditTrail
    from appliance.store import Store

    current = config.load(environ={}, data_dir=str(tmp_path / "data"), api_token="tok-old-1")
    current.data_path.mkdir(parents=True)
    store = Store(current.data_path / "appliance.db")
    desk = site_settings.SiteSettingsDesk(
        store, AuditTrail(store, current.data_path / "a.head"), current
    )
    yield desk
    store.close()


def _changes(desk: Any) -> list[dict[str, Any]]:
    rows = desk.store.query("SELECT user_id, detail FROM audit_events ORDER BY seq")
    found = [{"user": r["user_id"], **json.loads(r["detail"])} for r in rows]
    return [d for d in found if d.get("change") == "setting_changed"]


def test_an_edit_changes_only_that_setting_and_keeps_the_saved_others(desk: Any) -> None:
    first = desk.save('station_name = "EYE-2"\nclinic_name = "North Clinic"\n', user="ann")
    assert first.ok and first.edited == [
        ("clinic_name", "(empty)", "North Clinic"),
        ("station_name", "STATION1", "EYE-2"),
    ]
    result = desk.edit({"web_port": "8443"}, user="ann", address="10.0.0.5")
    assert result.ok and result.edited == [("web_port", "8080", "8443")]
    saved = tomllib.loads((desk.settings.data_path / "settings.toml").read_text())
    assert saved == {"station_name": "EYE-2", "clinic_name": "North Clinic", "web_port": 8443}
    again = config.load(environ={}, data_dir=desk.settings.data_dir)
    assert (again.station_name, again.clinic_name, again.web_port) == (
        "EYE-2",
        "North Clinic",
        8443,
    )
    assert _changes(desk)[-1] == {
        "user": "ann",
        "change": "setting_changed",
        "setting": "web_port",
        "old": "8080",
        "new": "8443",
        "restart_required": True,
    }
    # a paste merges too: the edited web_port stays
    desk.save('station_name = "EYE-3"\n', user="ann")
    saved = tomllib.loads((desk.settings.data_path / "settings.toml").read_text())
    assert saved == {"station_name": "EYE-3", "clinic_name": "North Clinic", "web_port": 8443}
    assert _changes(desk)[-1]["old"] == "EYE-2" and _changes(desk)[-1]["new"] == "EYE-3"


def test_the_form_is_prefilled_with_what_the_next_start_uses(desk: Any) -> None:
    desk.edit({"clinic_address": "1 Main St\nSpringfield", "trt_fp16": "false"}, user="ann")
    rows = {r["name"]: r for r in desk.effective()}
    assert rows["clinic_address"]["field"] == "1 Main St\nSpringfield"
    assert rows["clinic_address"]["kind"] == "multiline" and rows["clinic_address"]["saved"]
    assert rows["trt_fp16"]["field"] == "false" and rows["trt_fp16"]["kind"] == "bool"
    assert rows["trt_fp16"]["value"] == "True" and rows["trt_fp16"]["next"] == "False"
    assert rows["web_port"]["field"] == "8080" and not rows["web_port"]["saved"]
    assert rows["model_providers"]["field"].startswith("TensorrtExecutionProvider, ")
    assert rows["api_token"]["field"] == "" and rows["api_token"]["kind"] == "secret"
    assert rows["destinations"]["kind"] == "table" and rows["data_dir"]["kind"] == "fixed"


def test_values_are_read_with_their_declared_type_and_unknown_names_refused(desk: Any) -> None:
    cases = {
        "web_port": ("eighty", "setting 'web_port': cannot use 'eighty' as int"),
        "trt_fp16": ("maybe", "setting 'trt_fp16': cannot use 'maybe' as bool"),
        "monitoring_psi_alert": (
            "high",
            "setting 'monitoring_psi_alert': cannot use 'high' as float",
        ),
        "web_prot": ("8081", "unknown setting 'web_prot': nothing was saved (docs/settings.md)"),
        "data_dir": ("/tmp", "data_dir cannot be set here"),
        "destinations": ("pacs", "destinations are tables: paste them as [[destinations]] in TOML"),
        "log_level": ("LOUD", "log_level must be one of DEBUG, INFO, WARNING, ERROR, not 'LOUD'"),
    }
    for name, (value, expected) in cases.items():
        result = desk.edit({"station_name": "OK-1", name: value}, user="ann")
        assert not result.ok and any(e.startswith(expected) for e in result.errors), (
            name,
            result.errors,
        )
    assert not (desk.settings.data_path / "settings.toml").exists()
    assert _changes(desk) == []
    assert desk.edit({"web_port": "8080"}, user="ann").note.startswith("Nothing was changed")
    assert not (desk.settings.data_path / "settings.toml").exists()
    assert desk.edit({"dicom_allowed_calling_aes": "CAM1, CAM2"}, user="ann").ok
    again = config.load(environ={}, data_dir=desk.settings.data_dir)
    assert again.dicom_allowed_calling_aes == ("CAM1", "CAM2")


def test_a_secret_is_kept_unless_a_new_one_is_typed_and_never_shown_or_logged(
    desk: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    desk.save('api_token = "tok-saved-2"\n', user="ann")
    result = desk.edit({"api_token": "", "station_name": "EYE-9"}, user="ann")
    assert result.edited == [("station_name", "STATION1", "EYE-9")]
    assert config.load(environ={}, data_dir=desk.settings.data_dir).api_token == "tok-saved-2"
    result = desk.edit({"api_token": "tok-new-3"}, user="ann")
    assert result.edited == [("api_token", "•••••• (set)", "•••••• (set) (changed)")]
    assert config.load(environ={}, data_dir=desk.settings.data_dir).api_token == "tok-new-3"
    trail = json.dumps([dict(r) for r in desk.store.query("SELECT * FROM audit_events")])
    page = json.dumps(desk.effective())
    for secret in ("tok-old-1", "tok-saved-2", "tok-new-3"):
        assert secret not in trail and secret not in page and secret not in caplog.text
    assert [(c["setting"], c["old"], c["new"]) for c in _changes(desk)][0] == (
        "api_token",
        "•••••• (set)",
        "•••••• (set) (changed)",
    )


def test_a_broken_saved_file_is_not_overwritten_by_an_edit(desk: Any) -> None:
    path = desk.settings.data_path / "settings.toml"
    path.write_text("web_port = \n")
    result = desk.edit({"station_name": "X"}, user="ann")
    assert not result.ok and result.errors[0].startswith("the saved settings file cannot be read")
    assert path.read_text() == "web_port = \n"


def test_the_saved_file_is_written_back_as_toml_that_reads_the_same() -> None:
    from appliance.desks import settings_file

    table = {
        "clinic_address": 'Line "1"\\\nLine 2\t\x01\x7f é 😀',
        "web_port": 8443,
        "monitoring_psi_alert": 1e-05,
        "trt_fp16": False,
        "model_providers": ["CPUExecutionProvider"],
        "destinations": [{"name": "pacs", "kind": "stow", "url": "http://a/", "timeout": 5.0}],
    }
    assert tomllib.loads(settings_file.dumps(table)) == table


def test_pasted_secrets_are_not_shown_again() -> None:
    pasted = (
        'station_name = "A"\napi_token = "t-1"\n[[destinations]]\nname = "p"\n'
        'password = "pw"\n"web_secret" = "x"\n'
    )
    shown, dropped = site_settings.without_secrets(pasted)
    assert dropped and shown == 'station_name = "A"\n[[destinations]]\nname = "p"\n'
    assert site_settings.without_secrets("web_port = 1") == ("web_port = 1", False)
