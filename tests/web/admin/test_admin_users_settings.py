"""Admin console users and roles, and settings validation."""

from __future__ import annotations

import json
import re
from typing import Any

from appliance.config import Settings
from appliance.runtime.services import Services
from tests.admin_helpers import events, notice, text
from tests.web_helpers import PASSWORD, add_user, csrf, login


# -- users -------------------------------------------------------------------------------------
def _user_id(services: Services, name: str) -> int:
    return next(u.id for u in services.accounts.list() if u.username == name)


def test_users_add_change_role_disable_enable_and_reset(
    app: Any, admin: Any, services: Services
) -> None:
    token = csrf(admin, "/admin/users")
    response = admin.post(
        "/admin/users",
        data={"csrf_token": token, "username": "nina", "role": "operator", "password": PASSWORD},
    )
    assert response.status_code == 302
    assert notice(admin, "/admin/users") == "✔ Done: User nina added with the role operator."
    nina = _user_id(services, "nina")
    nina_client = app.test_client()
    assert login(nina_client, "nina").status_code == 302

    admin.post(f"/admin/users/{nina}/role", data={"csrf_token": token, "role": "clinician"})
    assert notice(admin, "/admin/users") == "✔ Done: nina now has the role clinician."
    assert services.accounts.get(nina).role == "clinician"  # type: ignore[union-attr]

    admin.post(f"/admin/users/{nina}/active", data={"csrf_token": token, "active": "0"})
    assert "nina is disabled; their sessions have ended" in notice(admin, "/admin/users")
    assert nina_client.get("/review").status_code == 302  # her session is over
    assert login(app.test_client(), "nina").status_code == 401
    assert "✖ disabled" in text(admin.get("/admin/users"))

    admin.post(f"/admin/users/{nina}/active", data={"csrf_token": token, "active": "1"})
    assert "nina is enabled (and unlocked)" in notice(admin, "/admin/users")
    admin.post(
        f"/admin/users/{nina}/password",
        data={"csrf_token": token, "password": "another long password"},
    )
    assert "password of nina is reset" in notice(admin, "/admin/users")
    assert login(app.test_client(), "nina").status_code == 401
    assert login(app.test_client(), "nina", "another long password").status_code == 302

    changes = [e["detail"]["change"] for e in events(services, "110113") if e["user_id"] == "ann"]
    assert changes == [
        "user_added",
        "role_changed",
        "user_disabled",
        "user_enabled",
        "password_set",
    ]


def test_user_changes_that_accounts_refuse_are_said_in_words(
    admin: Any, services: Services
) -> None:
    token = csrf(admin, "/admin/users")
    ann = _user_id(services, "ann")
    admin.post(f"/admin/users/{ann}/active", data={"csrf_token": token, "active": "0"})
    assert notice(admin, "/admin/users") == (
        "✖ Not done: this is the last active admin: add another admin first."
    )
    admin.post(f"/admin/users/{ann}/role", data={"csrf_token": token, "role": "operator"})
    assert "last active admin" in notice(admin, "/admin/users")
    admin.post(
        "/admin/users",
        data={"csrf_token": token, "username": "ann", "role": "admin", "password": PASSWORD},
    )
    assert notice(admin, "/admin/users") == "✖ Not done: the user 'ann' already exists."
    admin.post(
        "/admin/users",
        data={"csrf_token": token, "username": "x y", "role": "admin", "password": "short"},
    )
    assert "a user name starts with a letter" in notice(admin, "/admin/users")
    admin.post(f"/admin/users/{ann}/password", data={"csrf_token": token, "password": "short"})
    assert "at least 10 characters" in notice(admin, "/admin/users")
    assert services.accounts.get(ann).active  # type: ignore[union-attr]


def test_a_locked_account_can_be_unlocked(app: Any, admin: Any, services: Services) -> None:
    add_user(services, "lars", "operator")
    for _ in range(5):
        login(app.test_client(), "lars", "wrong password!")
    assert "⚠ locked until" in text(admin.get("/admin/users"))
    token = csrf(admin, "/admin/users")
    admin.post(
        f"/admin/users/{_user_id(services, 'lars')}/active",
        data={"csrf_token": token, "active": "1"},
    )
    assert login(app.test_client(), "lars").status_code == 302


# -- settings ----------------------------------------------------------------------------------
def test_settings_page_masks_secrets(admin: Any, settings: Settings) -> None:
    html = admin.get("/admin/settings").get_data(as_text=True)
    assert settings.api_token and settings.api_token not in html
    assert re.search(r"<code>api_token</code></th><td>•••••• \(set\)", html)
    assert "primary-care-dr-screening@" in html  # the guideline rules in use
    assert "ARCHIVE@127.0.0.1:" in html  # the worklist node


def test_settings_validation_errors_are_words_and_nothing_is_saved(
    admin: Any, services: Services, settings: Settings
) -> None:
    token = csrf(admin, "/admin/settings")
    cases = {
        "web_port = ": "not valid TOML",
        "web_prot = 8081": "unknown setting 'web_prot'",
        'web_port = "eighty"': "setting 'web_port': cannot use 'eighty' as int",
        'data_dir = "/tmp"': "data_dir cannot be set here",
        'web_tls_cert = "/nowhere.pem"': "web_tls_cert and web_tls_key go together",
        'outcome_rules = "/no/rules.toml"': "outcome_rules: /no/rules.toml: cannot read",
        "[[destinations]]\nname = 'x'\nkind = 'dimse'": "destinations[0]: missing host",
    }
    for pasted, expected in cases.items():
        response = admin.post(
            "/admin/settings", data={"csrf_token": token, "toml": pasted, "action": "save"}
        )
        assert response.status_code == 422, pasted
        said = text(response)
        assert "Not valid — nothing was saved." in said and expected in said, (pasted, said)
    assert not (settings.data_path / "settings.toml").exists()
    assert not [
        e for e in events(services, "110113") if e["detail"].get("change", "") == "settings_saved"
    ]


def test_valid_settings_are_saved_for_the_next_start_and_audited(
    admin: Any, services: Services, settings: Settings
) -> None:
    from appliance import config

    token = csrf(admin, "/admin/settings")
    pasted = (
        'station_name = "EYE-CLINIC-2"\nmonitoring_psi_alert = 0.2\napi_token = "s3cret-token-x"\n'
    )
    checked = admin.post(
        "/admin/settings", data={"csrf_token": token, "toml": pasted, "action": "check"}
    )
    assert checked.status_code == 200 and "Valid. Nothing is saved" in text(checked)
    assert not (settings.data_path / "settings.toml").exists()
    saved = admin.post(
        "/admin/settings", data={"csrf_token": token, "toml": pasted, "action": "save"}
    )
    said = text(saved)
    assert "Valid and saved. Restart the appliance to apply" in said
    assert "station_name STATION1 EYE-CLINIC-2" in said  # what changes at the next start
    assert "api_token •••••• (set) •••••• (set)" in said
    changes = re.search(r'<table id="settings-changes">.*?</table>', saved.get_data(True), re.S)
    assert changes and "s3cret" not in changes.group(0)
    assert "s3cret" not in saved.get_data(True) and "s3cret" not in checked.get_data(True)
    assert "are not shown again" in said and 'station_name = "EYE-CLINIC-2"' in said
    file = settings.data_path / "settings.toml"
    assert file.read_text() == pasted and (file.stat().st_mode & 0o777) == 0o600
    assert "waiting for a restart" in text(admin.get("/admin/settings"))
    assert services.settings.station_name == "STATION1"  # the running appliance is unchanged
    event = [
        e for e in events(services, "110113") if e["detail"].get("change") == "settings_saved"
    ][0]
    assert event["user_id"] == "ann" and event["event_type"] == "110131"
    assert event["detail"]["settings"] == ["api_token", "monitoring_psi_alert", "station_name"]
    assert "s3cret" not in json.dumps(event)
    # the next start reads it: after the config file, before the environment
    again = config.load(
        environ={"APPLIANCE_MONITORING_PSI_ALERT": "0.3"}, data_dir=settings.data_dir
    )
    assert (again.station_name, again.api_token, again.monitoring_psi_alert) == (
        "EYE-CLINIC-2",
        "s3cret-token-x",
        0.3,
    )

    admin.post("/admin/settings/remove", data={"csrf_token": token})
    assert "Nothing removed" in notice(admin, "/admin/settings")
    admin.post("/admin/settings/remove", data={"csrf_token": token, "confirm": "yes"})
    assert "saved settings file is removed" in notice(admin, "/admin/settings")
    assert not file.exists()
    assert config.load(environ={}, data_dir=settings.data_dir).station_name == "STATION1"


def _form_fields(html: str, form_id: str) -> dict[str, str]:
    """What a browser would submit from the form ``form_id`` untouched."""
    from html.parser import HTMLParser

    class Form(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.inside, self.fields = False, {}
            self.select: str | None = None
            self.area: str | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = {k: v or "" for k, v in attrs}
            if tag == "form":
                self.inside = a.get("id") == form_id
            elif self.inside and tag == "input" and a.get("name"):
                self.fields[a["name"]] = a.get("value", "")
            elif self.inside and tag == "select":
                self.select = a["name"]
            elif self.inside and tag == "option" and self.select and "selected" in a:
                self.fields[self.select] = a["value"]
            elif self.inside and tag == "textarea":
                self.area = a["name"]
                self.fields[self.area] = ""

        def handle_data(self, data: str) -> None:
            if self.area:
                self.fields[self.area] += data.removeprefix("\n")

        def handle_endtag(self, tag: str) -> None:
            if tag == "form":
                self.inside = False
            self.select = None if tag == "select" else self.select
            self.area = None if tag == "textarea" else self.area

    parser = Form()
    parser.feed(html)
    return parser.fields


def test_settings_form_is_prefilled_and_a_save_changes_only_what_was_edited(
    admin: Any, services: Services, settings: Settings
) -> None:
    from appliance import config

    file = settings.data_path / "settings.toml"
    file.write_text('clinic_name = "North Clinic"\nmonitoring_days = 60\n')
    html = admin.get("/admin/settings").get_data(as_text=True)
    fields = _form_fields(html, "settings-edit")
    assert fields["set.clinic_name"] == "North Clinic"  # the saved value, pre-filled
    assert fields["set.monitoring_days"] == "60" and fields["set.web_port"] == str(
        settings.web_port
    )
    assert fields["set.api_token"] == "" and settings.api_token not in html
    assert fields["set.trt_fp16"] == "true"
    assert "Every setting is read once, at start" in text(admin.get("/admin/settings"))

    fields["set.station_name"] = "EYE-CLINIC-7"  # the one edit
    response = admin.post("/admin/settings/edit", data=fields)
    said = text(response)
    assert response.status_code == 200 and "Valid and saved." in said
    assert "station_name STATION1 EYE-CLINIC-7" in said
    again = config.load(environ={}, data_dir=settings.data_dir)
    assert (again.station_name, again.clinic_name, again.monitoring_days) == (
        "EYE-CLINIC-7",
        "North Clinic",
        60,
    )
    changed = [
        e["detail"]
        for e in events(services, "110113")
        if e["detail"].get("change") == "setting_changed"
    ]
    assert [(c["setting"], c["old"], c["new"]) for c in changed] == [
        ("station_name", "STATION1", "EYE-CLINIC-7")
    ]
    # the page drawn again shows the new saved value, waiting for a restart
    fields = _form_fields(admin.get("/admin/settings").get_data(as_text=True), "settings-edit")
    assert fields["set.station_name"] == "EYE-CLINIC-7"
    assert services.settings.station_name == "STATION1"


def test_settings_edit_refuses_unknown_and_mistyped_values_and_needs_csrf(
    app: Any, admin: Any, services: Services, settings: Settings
) -> None:
    token = csrf(admin, "/admin/settings")
    response = admin.post(
        "/admin/settings/edit", data={"csrf_token": token, "set.web_prot": "1", "set.web_port": "x"}
    )
    said = text(response)
    assert response.status_code == 422 and "Not valid — nothing was saved." in said
    assert "unknown setting 'web_prot'" in said and "cannot use 'x' as int" in said
    assert admin.post("/admin/settings/edit", data={"set.web_port": "8443"}).status_code == 400
    assert not (settings.data_path / "settings.toml").exists()
    add_user(services, "olga", "operator")
    operator = app.test_client()
    login(operator, "olga")
    refused = operator.post(
        "/admin/settings/edit",
        data={"csrf_token": csrf(operator, "/station"), "set.web_port": "8443"},
    )
    assert refused.status_code == 403 and not (settings.data_path / "settings.toml").exists()
