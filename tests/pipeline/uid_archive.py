"""A pynetdicom archive for the OCT robustness tests: it keeps every object it is sent by SOP
Instance UID (whatever the object: OPT, thickness map, SR, PDF) and counts each delivery, so a
test can say what reached the archive and how often. ``hold`` makes its C-STORE handler wait
(``held`` is set when a send is waiting), so a test can stop the sender mid-send."""

from __future__ import annotations

import threading
import warnings
from collections import Counter
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.presentation import StoragePresentationContexts

from appliance.capture.scp import TRANSFER_SYNTAXES


class UidArchive:
    def __init__(self, port: int) -> None:
        self.port = port
        self.stored: dict[str, Dataset] = {}
        self.deliveries: Counter[str] = Counter()  # answered with success, by SOP Instance UID
        self.held = threading.Event()  # a C-STORE is waiting at the hold
        self._release = threading.Event()
        self._release.set()
        self._lock = threading.Lock()
        self.server: Any = None

    def _on_store(self, event: Any) -> int:
        with warnings.catch_warnings():  # an archive keeps what it is sent, odd values and all
            warnings.simplefilter("ignore")
            ds = event.dataset
            ds.file_meta = event.file_meta
            uid = str(ds.SOPInstanceUID)
        if not self._release.is_set():
            self.held.set()
            self._release.wait(timeout=120)
            return 0xA700  # the sender is gone by now; whatever it hears, it must resend
        with self._lock:
            self.stored[uid] = ds
            self.deliveries[uid] += 1
        return 0x0000

    def hold(self) -> None:
        self.held.clear()
        self._release.clear()

    def release(self) -> None:
        self._release.set()

    def uids(self) -> set[str]:
        with self._lock:
            return set(self.stored)

    def start(self) -> UidArchive:
        ae = AE(ae_title="ARCHIVE")
        for context in StoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return self

    def stop(self) -> None:
        self.release()
        if self.server is not None:
            self.server.shutdown()
            self.server = None
