"""A TCP gate between the appliance and an archive, so a test can make a state happen.

``TcpGate(upstream_port)`` listens on its own loopback port (``port``). Each connection it
accepts is handled by the gate's mode at that moment:

- ``"pass"``: bytes are relayed both ways to the upstream port (or the client is closed at once
  when nothing listens there, as a down archive would);
- ``"hold"``: the connection is accepted and kept open with nothing relayed, and ``held`` is set.
  A sender that leases its jobs before it connects (the forwarder) is then, provably, holding a
  lease: the test acts on that state instead of polling for it to pass by.

``release()`` closes every held connection and switches back to ``"pass"``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class TcpGate:
    def __init__(self, upstream_port: int, mode: str = "pass") -> None:
        self.upstream_port = upstream_port
        self.mode = mode
        self.held = threading.Event()
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="tcp-gate", daemon=True)
        self._thread.start()

    def hold(self) -> None:
        with self._lock:
            self.held.clear()
            self.mode = "hold"

    def release(self) -> None:
        with self._lock:
            self.mode = "pass"
            held, self._held = self._held, []
        for conn in held:
            conn.close()

    def close(self) -> None:
        self._closed = True
        self.release()
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> TcpGate:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                if self.mode == "hold":
                    self._held.append(conn)
                    self.held.set()
                    continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                conn.close()  # nothing listens upstream: the archive is down
                continue
            upstream.settimeout(None)
            for source, sink in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
