"""The production web server: waitress, with deadlines, a connection limit and TLS.

waitress reads each request whole (line, headers, body) on one event loop and only then hands
it to a worker thread, so a slow or half-open client holds a socket, never a thread. Around it:

* deadlines, checked every second: the request line and headers (and, on HTTPS, the TLS
  handshake) within ``header_timeout`` of the connection or of the request's first byte; the
  whole request, body included, within ``request_timeout``; an idle keep-alive connection is
  kept ``idle_timeout``. A connection whose request the app is running is never cut.
* a connection limit: at the limit a new connection takes the place of the oldest one the app
  is not serving (half-open or idle), so a flood cannot lock out a client that sends its
  request promptly; the unit's ``LimitNOFILE`` leaves room for the DICOM side and the store.
* TLS (waitress has none): each accepted socket is wrapped without a handshake and the
  handshake runs on the event loop, non-blocking, under the header deadline, so a client that
  never finishes it blocks nobody.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

from appliance.config import Settings

LOGGER = logging.getLogger(__name__)
MAX_HEADER_BYTES = 64 * 1024
BODY_MARGIN = 1024 * 1024  # multipart framing around the largest upload


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0
    request_timeout: float = 120.0
    idle_timeout: float = 30.0
    connection_limit: int = 500
    threads: int = 8
    max_body_bytes: int = 64 * 1024 * 1024 + BODY_MARGIN

    def __post_init__(self) -> None:
        for name in ("header_timeout", "request_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"web_{name} must be a positive number of seconds")
        if self.connection_limit < 1 or self.threads < 1:
            raise ValueError("web_connection_limit and web_threads must be at least 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            header_timeout=settings.web_header_timeout,
            request_timeout=settings.web_request_timeout,
            idle_timeout=settings.web_idle_timeout,
            connection_limit=settings.web_connection_limit,
            threads=settings.web_threads,
            max_body_bytes=settings.upload_max_bytes + BODY_MARGIN,
        )


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    context.load_cert_chain(cert, key)
    return context


class _Channel(HTTPChannel):
    """One connection, with the times its deadlines are measured from."""

    started: float | None = None  # first byte of the request being received
    served = 0  # requests completed on this connection

    def received(self, data: bytes) -> bool:
        before = self.request
        result: bool = super().received(data)
        if self.request is None:
            self.started = None
        elif self.request is not before:
            self.started = time.time()
        return result

    def service(self) -> None:
        super().service()
        self.served += 1

    def busy(self) -> bool:
        """The app is running (or about to run) a request of this connection."""
        return bool(self.requests)

    def overdue(self, now: float, limits: Limits) -> str:
        """Which deadline this connection has missed ("" for none)."""
        if self.busy():
            return ""
        if self.request is not None and self.started is not None:
            if not self.request.headers_finished:
                return "header" if now - self.started > limits.header_timeout else ""
            return "request" if now - self.started > limits.request_timeout else ""
        if not self.served:  # connected, nothing complete yet
            return "header" if now - self.creation_time > limits.header_timeout else ""
        return "idle" if now - self.last_activity > limits.idle_timeout else ""


class _TLSChannel(_Channel):
    """A channel on a non-blocking TLS socket; the handshake runs on the event loop."""

    handshaken = False
    want_write = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.tls_lock = threading.Lock()  # OpenSSL: one call at a time per connection
        super().__init__(*args, **kwargs)

    def readable(self) -> bool:
        if not self.handshaken:
            return not self.want_write and not self.will_close
        return bool(super().readable())

    def writable(self) -> bool:
        if not self.handshaken:
            return self.want_write or self.will_close
        return bool(super().writable())

    def overdue(self, now: float, limits: Limits) -> str:
        if not self.handshaken:
            return "handshake" if now - self.creation_time > limits.header_timeout else ""
        return super().overdue(now, limits)

    def handle_read(self) -> None:
        if not self.handshaken:
            self._handshake()
            return
        try:
            with self.tls_lock:
                data = self.socket.recv(self.adj.recv_bytes)
                while data and self.socket.pending():  # decrypted already: poll won't say so
                    data += self.socket.recv(self.socket.pending())
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:  # ssl.SSLError included
            self.handle_close()
            return
        if not data:
            self.handle_close()
            return
        self.last_activity = time.time()
        self.received(data)

    def handle_write(self) -> None:
        if not self.handshaken:
            if self.will_close:
                self.handle_close()
            else:
                self._handshake()
            return
        super().handle_write()

    def send(self, data: bytes, do_close: bool = True) -> int:
        try:
            with self.tls_lock:
                return int(self.socket.send(data))
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return 0
        except OSError:
            if do_close:
                self.handle_close()
            return 0

    def _handshake(self) -> None:
        try:
            with self.tls_lock:
                self.socket.do_handshake()
        except ssl.SSLWantReadError:
            self.want_write = False
            return
        except ssl.SSLWantWriteError:
            self.want_write = True
            return
        except OSError as exc:  # plain HTTP on the TLS port, an old client, a reset
            LOGGER.debug("TLS handshake failed: %s", exc)
            self.handle_close()
            return
        self.handshaken = True
        self.want_write = False
        self.last_activity = time.time()
        if self.socket.pending():
            self.handle_read()


class WebServer(TcpWSGIServer):
    """``WebServer(app, host, port, limits, tls)``; ``serve()`` until ``shutdown()``."""

    next_channel_cleanup: float = 0.0

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        limits: Limits,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.limits = limits
        self.tls = tls
        self.channel_class = _TLSChannel if tls is not None else _Channel
        self._stopping = threading.Event()
        self._accept_paused_until = 0.0
        super().__init__(
            app,
            host=host,
            port=port,
            threads=limits.threads,
            # The limit is kept here (handle_accept), by making room rather than by no longer
            # accepting; waitress's own check is set out of the way.
            connection_limit=1 << 30,
            channel_timeout=max(1, int(limits.idle_timeout)),  # unused: see maintenance()
            cleanup_interval=1,
            max_request_header_size=MAX_HEADER_BYTES,
            max_request_body_size=limits.max_body_bytes,
            url_scheme="https" if tls is not None else "http",
            ident="",
            asyncore_use_poll=True,  # select() stops at descriptor 1024
            expose_tracebacks=False,
            clear_untrusted_proxy_headers=True,
        )

    @property
    def port(self) -> int:
        return int(self.effective_port)

    def serve(self) -> None:
        """Run the event loop until :meth:`shutdown`; then close every connection."""
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=1.0, map=self._map, use_poll=True, count=1)
        finally:
            self.task_dispatcher.shutdown(timeout=5)
            wasyncore.close_all(self._map)

    def shutdown(self) -> None:
        """Safe from any thread or a signal handler."""
        self._stopping.set()
        self.pull_trigger()

    def handle_accept(self) -> None:
        try:
            pair = self.accept()
        except OSError as exc:  # EMFILE and friends: the listen queue keeps the client for later
            LOGGER.warning("web: accept failed (%s); accepting again in a second", exc.strerror)
            self._accept_paused_until = time.time() + 1.0
            return
        if pair is None:
            return
        conn, addr = pair
        if len(self.active_channels) >= self.limits.connection_limit and not self._make_room():
            conn.close()  # every connection is being served: this one is refused
            return
        try:
            self.set_socket_options(conn)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError):
            conn.close()
            return
        self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)

    def _make_room(self) -> bool:
        """Close the oldest connection the app is not serving; False when there is none."""
        idle = [c for c in self.active_channels.values() if not c.busy() and not c.will_close]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.last_activity)
        oldest.handle_close()
        return True

    def maintenance(self, now: float) -> None:
        """Close connections past a deadline (called about once a second by the loop)."""
        for channel in list(self.active_channels.values()):
            missed = channel.overdue(now, self.limits)
            if missed and not channel.will_close:
                LOGGER.debug("web: %s deadline missed, connection closed", missed)
                channel.will_close = True

    def readable(self) -> bool:
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        return bool(self.accepting) and now >= self._accept_paused_until


def make_server(settings: Settings, app: Any, *, port: int | None = None) -> WebServer:
    tls = None
    if settings.web_tls_cert and settings.web_tls_key:
        tls = tls_context(settings.web_tls_cert, settings.web_tls_key)
    return WebServer(
        app,
        settings.web_host,
        settings.web_port if port is None else port,
        Limits.from_settings(settings),
        tls,
    )
