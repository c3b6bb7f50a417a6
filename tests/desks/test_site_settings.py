"""Settings as the console shows and checks them; the saved file read at the next start."""

from __future__ import annotations

from pathlib import Path

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
