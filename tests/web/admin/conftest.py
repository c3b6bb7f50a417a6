"""Admin console tests: a scripted pynetdicom archive and the settings that point at it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from appliance.config import Destination, Settings
from appliance.runtime.services import Services
from tests.admin_helpers import Archive
from tests.web_helpers import logged_in


@pytest.fixture
def archive_port() -> int:
    from tests.conftest import free_port

    return free_port()


@pytest.fixture
def settings(settings: Settings, archive_port: int) -> Settings:
    from tests.conftest import free_port

    return settings.replace(
        destinations=(
            Destination("pacs", "127.0.0.1", archive_port, "ARCHIVE", timeout=5),
            Destination("offline", "127.0.0.1", free_port(), "NOBODY", timeout=2),
        ),
        worklist_host="127.0.0.1",
        worklist_port=archive_port,
        worklist_ae_title="ARCHIVE",
        outbox_backoff_seconds=0.05,
        outbox_backoff_cap_seconds=0.2,
        monitoring_psi_min_photos=30,
    )


@pytest.fixture
def archive(archive_port: int) -> Iterator[Archive]:
    server = Archive(archive_port, [0xC000])  # the first object is refused for good
    yield server
    server.server.shutdown()


@pytest.fixture
def admin(app: Any, services: Services) -> Any:
    return logged_in(app, services, "admin", "ann")
