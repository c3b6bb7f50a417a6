from __future__ import annotations

from pathlib import Path

import pytest

from appliance import config

ROOT = Path(__file__).resolve().parents[1]


def test_embedded_defaults() -> None:
    s = config.load(environ={})
    assert s.data_dir == "./var"
    assert (s.web_host, s.web_port) == ("127.0.0.1", 8080)
    assert (s.dicom_ae_title, s.dicom_port) == ("SCREENING", 11112)
    assert s.inbox_path == s.data_path / "inbox"


def test_toml_then_environment_override(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(
        'web_port = 9000\ndicom_ae_title = "CLINIC1"\ndicom_allowed_calling_aes = ["CAM1"]\n'
    )
    s = config.load(
        path, environ={"APPLIANCE_WEB_PORT": "9100", "APPLIANCE_DATA_DIR": str(tmp_path)}
    )
    assert s.web_port == 9100  # environment wins over the file
    assert s.dicom_ae_title == "CLINIC1"
    assert s.dicom_allowed_calling_aes == ("CAM1",)
    assert s.data_path == tmp_path.resolve()


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text("dicom_port = 104\n")
    assert config.load(environ={"APPLIANCE_CONFIG": str(path)}).dicom_port == 104


def test_list_from_environment_is_comma_separated() -> None:
    s = config.load(environ={"APPLIANCE_DICOM_ALLOWED_CALLING_AES": "CAM1, CAM2"})
    assert s.dicom_allowed_calling_aes == ("CAM1", "CAM2")


@pytest.mark.parametrize(
    ("content", "message"),
    [("no_such_setting = 1\n", "unknown setting"), ('web_port = "eighty"\n', "web_port")],
)
def test_bad_config_is_refused_with_its_name(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        config.load(path, environ={})


def test_every_setting_is_documented() -> None:
    documented = (ROOT / "docs" / "settings.md").read_text()
    for name, _, help_text in config.declared():
        assert help_text.strip(), f"setting {name} has no help text"
        assert f"`{name}`" in documented, f"setting {name} is missing from docs/settings.md"
    assert documented == config.markdown(), (
        "docs/settings.md is stale: run `appliance settings --markdown`"
    )


def test_quality_defaults_match_the_calibrated_gate() -> None:
    from dataclasses import fields

    from appliance.quality import QualityThresholds

    s = config.load(environ={})
    calibrated = QualityThresholds()
    for f in fields(QualityThresholds):
        assert getattr(s, f"quality_{f.name}") == getattr(calibrated, f.name), f.name
