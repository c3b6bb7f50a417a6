"""Helpers for the admin console tests: a scripted archive, what a page says, its table cells,
audit events."""

from __future__ import annotations

import json
import re
import threading
from html import unescape
from pathlib import Path
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.presentation import StoragePresentationContexts

from appliance.capture.scp import TRANSFER_SYNTAXES
from appliance.runtime.services import Services

ROOT = Path(__file__).resolve().parents[1]
VERIFICATION = "1.2.840.10008.1.1"


class Archive:
    """A pynetdicom archive answering C-ECHO, and C-STORE with scripted statuses, then 0."""

    def __init__(self, port: int, statuses: list[int]) -> None:
        self.port, self.statuses = port, list(statuses)
        self.stored: list[str] = []
        self._lock = threading.Lock()
        ae = AE(ae_title="ARCHIVE")
        ae.add_supported_context(VERIFICATION)
        for context in StoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        self.server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )

    def _on_store(self, event: Any) -> int:
        with self._lock:
            status = self.statuses.pop(0) if self.statuses else 0x0000
            if status == 0:
                self.stored.append(str(event.dataset.SOPInstanceUID))
            return status


def words(html: str) -> str:
    """What a fragment says: tags dropped, white space collapsed."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).strip()


def text(response: Any) -> str:
    return words(response.get_data(as_text=True))


def cells(row: str) -> list[str]:
    return [words(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)]


def notice(client: Any, path: str) -> str:
    html = client.get(path).get_data(as_text=True)
    found = re.search(r'id="admin-notice"[^>]*>(.*?)</p>', html, flags=re.S)
    assert found, "no notice on the page"
    return words(found.group(1))


def events(services: Services, event_id: str) -> list[dict[str, Any]]:
    rows = services.store.query(
        "SELECT * FROM audit_events WHERE event_id = ? ORDER BY seq", (event_id,)
    )
    return [{**r, "detail": json.loads(r["detail"])} for r in rows]
