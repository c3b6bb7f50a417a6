"""The appliance names itself in the objects it makes: its serial number is the
``device_serial`` setting, else an installation id made once in the data directory, so two
appliances under one UID root are two Device Observers, and one appliance stays one."""

from __future__ import annotations

import re
from pathlib import Path

from appliance.config import Settings
from appliance.dicom.sr import device_observer_uid
from appliance.pipeline.oct_documents import INSTALLATION_ID, appliance_device


def _settings(data: Path, **changes: str) -> Settings:
    return Settings(data_dir=str(data)).replace(uid_root="1.2.826.0.1.3680043.8.498.", **changes)


def test_each_installation_is_its_own_device_and_stays_it(tmp_path: Path) -> None:
    one, other = _settings(tmp_path / "a"), _settings(tmp_path / "b")
    first = appliance_device(one)
    assert re.fullmatch(r"[0-9a-f]{16}", first["serial"])
    assert (tmp_path / "a" / INSTALLATION_ID).read_text().strip() == first["serial"]
    assert appliance_device(one) == first  # a restart: the same device
    second = appliance_device(other)
    assert second["serial"] != first["serial"]
    assert device_observer_uid(one.uid_root, first) != device_observer_uid(
        other.uid_root, second
    )  # two appliances, one UID root: two observers


def test_the_setting_names_the_serial_and_a_damaged_id_is_made_again(tmp_path: Path) -> None:
    named = appliance_device(_settings(tmp_path / "a", device_serial="SN-0042"))
    assert named["serial"] == "SN-0042"
    assert not (tmp_path / "a" / INSTALLATION_ID).exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / INSTALLATION_ID).write_text("not an id\n")
    made = appliance_device(_settings(tmp_path / "b"))
    assert re.fullmatch(r"[0-9a-f]{16}", made["serial"])
    assert (tmp_path / "b" / INSTALLATION_ID).read_text().strip() == made["serial"]
