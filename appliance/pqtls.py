"""A TLS 1.3 listener with post-quantum key exchange (X25519MLKEM768), in the server's own event loop.

The stdlib ``ssl`` module is linked against the system's OpenSSL (3.0 on Debian 12), which has no
ML-KEM; the OpenSSL bundled inside ``cryptography`` has it, and pyOpenSSL reaches it. This module
does the TLS of each connection with a pyOpenSSL ``Connection`` over memory BIOs, driven by an
asyncio protocol: ciphertext in and out through the event loop's own TCP transport, plaintext handed
to the very HTTP protocol class the main listener uses (uvicorn's httptools protocol with the limits
of :mod:`appliance.httpguard`) through a transport adapter. No thread, no second socket: decrypted
bytes never leave the process's memory, and both listeners share one app (rate limits, call log,
connection cap).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from OpenSSL import SSL

log = logging.getLogger(__name__)
PQ_GROUP = "X25519MLKEM768"
# "/" separates preference tuples: a client that lists X25519MLKEM768 but sent only an X25519 key
# share is asked for an ML-KEM share (HelloRetryRequest) instead of settling for X25519.
HYBRID_FIRST = f"{PQ_GROUP}/X25519:secp256r1"
READ_SIZE = 64 * 1024


class PQTLSError(Exception):
    """The TLS library cannot offer what the listener needs (no ML-KEM in the bundled OpenSSL)."""


def _set_groups(context: SSL.Context, groups: str) -> None:
    # pyOpenSSL has no setter for key exchange groups; SSL_CTX_set1_curves_list is the same call as
    # SSL_CTX_set1_groups_list (a macro alias in OpenSSL) and is exported by cryptography's bindings.
    from OpenSSL._util import lib

    if lib.SSL_CTX_set1_curves_list(context._context, groups.encode()) != 1:
        raise PQTLSError(f"the OpenSSL inside 'cryptography' refuses the key exchange groups {groups!r}")


def server_context(cert_file: Path, key_file: Path, pq_only: bool) -> SSL.Context:
    """TLS 1.3 only; X25519MLKEM768 preferred, or required with ``pq_only``."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.use_certificate_chain_file(str(cert_file))
    context.use_privatekey_file(str(key_file))
    context.check_privatekey()
    _set_groups(context, PQ_GROUP if pq_only else HYBRID_FIRST)
    return context


def client_context(groups: str, cafile: Path | None = None) -> SSL.Context:
    """A TLS 1.3 client context offering only ``groups`` (tests and the benchmark)."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    if cafile is not None:
        context.load_verify_locations(str(cafile))
        context.set_verify(SSL.VERIFY_PEER, lambda *_: True)
    _set_groups(context, groups)
    return context


class TLSTransport(asyncio.Transport):
    """What the HTTP protocol sees: a transport whose writes are encrypted into the TLS connection
    and whose reads it is fed decrypted. Everything else is the TCP transport's."""

    def __init__(self, outer: PQTLSProtocol, raw: asyncio.Transport) -> None:
        super().__init__()
        self._outer = outer
        self._raw = raw
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sslcontext":  # uvicorn sets scope["scheme"] = "https" from this
            return self._outer.context
        if name == "ssl_object":
            return self._outer.tls
        return self._raw.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._raw.is_closing():
            return
        try:
            self._outer.tls.sendall(bytes(data))
        except SSL.Error as exc:
            log.debug("TLS write failed: %s", exc)
            self.abort()
            return
        self._outer.flush()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def is_closing(self) -> bool:
        return self._closing or self._raw.is_closing()

    def close(self) -> None:
        """close_notify, then close the TCP connection once what is buffered has been sent."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(SSL.Error):
            self._outer.tls.shutdown()
        self._outer.flush()
        self._raw.close()

    def abort(self) -> None:
        self._closing = True
        self._raw.abort()

    def pause_reading(self) -> None:
        self._outer.paused = True
        self._raw.pause_reading()

    def resume_reading(self) -> None:
        self._outer.paused = False
        self._raw.resume_reading()
        # Records decrypted into the BIO while paused are delivered without waiting for new bytes.
        asyncio.get_running_loop().call_soon(self._outer.deliver)

    def is_reading(self) -> bool:
        return not self._outer.paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._raw.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._outer.app = cast(asyncio.Protocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._outer.app is not None
        return self._outer.app


class PQTLSProtocol(asyncio.Protocol):
    """One TCP connection: the TLS handshake (with its deadline), then decrypted bytes to the HTTP
    protocol made by ``http_factory`` — created only once the handshake is done, as the main
    listener's is."""

    def __init__(self, context: SSL.Context, http_factory: Callable[[], asyncio.Protocol],
                 handshake_timeout: float) -> None:
        self.context = context
        self.tls = SSL.Connection(context, None)
        self.tls.set_accept_state()
        self.app: asyncio.Protocol | None = None
        self.paused = False
        self._factory = http_factory
        self._handshake_timeout = handshake_timeout
        self._raw: asyncio.Transport | None = None
        self._transport: TLSTransport | None = None
        self._deadline: asyncio.TimerHandle | None = None

    # -- TCP side ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport has the whole Transport interface without subclassing it.
        self._raw = cast(asyncio.Transport, transport)
        self._deadline = asyncio.get_running_loop().call_later(self._handshake_timeout, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        self.tls.bio_write(data)
        if self.app is None and not self._handshake():
            return
        self.deliver()

    def eof_received(self) -> bool | None:
        if self.app is not None:
            self.app.eof_received()
        return None  # close the TCP transport: a TLS stream cannot be half-closed

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        if self.app is not None:
            self.app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    # -- TLS ---------------------------------------------------------------------------------------
    def _handshake(self) -> bool:
        assert self._raw is not None
        try:
            self.tls.do_handshake()
        except SSL.WantReadError:
            self.flush()
            return False
        except SSL.Error as exc:
            # A client offering no acceptable group (tls.pq_only), an old TLS version, garbage...
            log.info("TLS handshake with %s failed: %s", self._raw.get_extra_info("peername"), exc)
            self.flush()  # the alert
            self._raw.close()
            return False
        self._cancel_deadline()
        self.flush()
        self._transport = TLSTransport(self, self._raw)
        self.app = self._factory()
        self.app.connection_made(self._transport)
        return True

    def deliver(self) -> None:
        """Hand every complete decrypted record to the HTTP protocol, unless it paused reading."""
        if self.app is None or self._transport is None:
            return
        while not self.paused and not self._transport.is_closing():
            try:
                data = self.tls.recv(READ_SIZE)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:  # the client's close_notify
                self.app.eof_received()
                self._transport.close()
                break
            except SSL.Error as exc:
                log.debug("TLS read failed: %s", exc)
                self._transport.abort()
                break
            self.app.data_received(data)
        self.flush()  # post-handshake messages (session tickets, key updates)

    def flush(self) -> None:
        """Send what OpenSSL wrote into the outgoing BIO."""
        assert self._raw is not None
        while True:
            try:
                data = self.tls.bio_read(READ_SIZE)
            except SSL.WantReadError:
                return
            if self._raw.is_closing():
                return
            self._raw.write(data)

    def _handshake_expired(self) -> None:
        self._deadline = None
        if self.app is None and self._raw is not None and not self._raw.is_closing():
            log.info("closing a connection that did not finish its TLS handshake within %.0f s",
                     self._handshake_timeout)
            self._raw.abort()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
