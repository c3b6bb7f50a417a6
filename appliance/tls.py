"""DICOM TLS contexts (PS3.15 Annex B, BCP 195): TLS 1.2 at least, forward-secret AEAD ciphers.

One place builds every ``ssl.SSLContext`` the DICOM side uses: the SCP's (``server_context``)
and the SCUs' (``client_context``: forwarding, Storage Commitment, worklist, C-ECHO). TLS 1.3
is preferred (its suites are all strong); TLS 1.2 is limited to ECDHE/DHE with AES-GCM or
ChaCha20-Poly1305 (BCP 195 / RFC 9325). No compression, no renegotiation.

A client context records why its last handshake failed (``failure``): pynetdicom only logs it,
and the forwarder needs it as the reason it retries (an expired or untrusted archive
certificate, a name mismatch).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

BCP195_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"
_OPTIONS = ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE


@dataclass(frozen=True)
class TlsClient:
    """TLS for an association this appliance opens: whom to trust and who we are."""

    ca: str = ""  # PEM CA bundle trusted for the peer; empty: the system's
    cert: str = ""  # PEM client certificate (with key), for peers that require one
    key: str = ""


def worklist_tls(settings: Any) -> TlsClient | None:
    """The worklist's TLS settings (``worklist_tls*``), or None for plain DIMSE."""
    if not settings.worklist_tls:
        return None
    return TlsClient(
        settings.worklist_tls_ca, settings.worklist_tls_cert, settings.worklist_tls_key
    )


def _harden(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_TLS12_CIPHERS)
    context.options |= _OPTIONS


def server_context(
    cert: str, key: str, ca: str = "", *, require_client_cert: bool = False
) -> ssl.SSLContext:
    """The SCP's context; a client certificate is checked against ``ca`` when one is sent,
    and required with ``require_client_cert``."""
    if require_client_cert and not ca:
        raise ValueError("dicom_tls_require_client_cert needs dicom_tls_ca (whom to trust)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context)
    context.load_cert_chain(cert, key)
    if ca:
        context.load_verify_locations(cafile=ca)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


class _RecordingSocket(ssl.SSLSocket):
    """An SSLSocket that leaves the reason a client handshake failed on its context."""

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except ssl.SSLError as exc:
            context = self.context
            if isinstance(context, RecordingContext):
                context.failure = describe(exc)
            raise


class RecordingContext(ssl.SSLContext):
    sslsocket_class = _RecordingSocket
    failure: str = ""


def client_context(tls: TlsClient) -> RecordingContext:
    """A client context that verifies the peer's certificate and name."""
    context = RecordingContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(context)
    if tls.ca:
        context.load_verify_locations(cafile=tls.ca)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls.cert:
        context.load_cert_chain(tls.cert, tls.key or None)
    context.failure = ""
    return context


def describe(exc: BaseException) -> str:
    """A handshake failure in words: the verification message when there is one."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"TLS: the peer's certificate was refused: {exc.verify_message}"
    reason = getattr(exc, "reason", None)
    return f"TLS handshake failed: {reason or exc}"
