"""The ISO 8583 connection on a real TCP socket (127.0.0.1), plain and TLS with a pinned CA:
what each way of failing means for the money (HostUnreachable: nothing sent; OutcomeUnknown:
sent, no believable answer), and late answers to earlier requests skipped."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from terminal.acquirer.client import HostUnreachable, OutcomeUnknownError, TlsOptions
from terminal.acquirer.iso8583.codec import (
    Message,
    decode_message,
    encode_message,
    frame,
    read_frame,
)
from terminal.acquirer.iso8583.connection import Iso8583Connection
from terminal.acquirer.iso8583.messages import Request, Station, echo_test, sign_on
from terminal.acquirer.iso8583.profile import default_profile

from .test_acquirer_tls import pki  # noqa: F401 - the test PKI fixture

PROFILE = default_profile()
KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
STATION = Station(terminal_id="TERM0001", merchant_id="MERCHANT0000001")
NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)

#: What the test host answers a request with: the answers' (mti, fields, key) in order.
Script = Callable[[Message], list[tuple[str, dict[str, str | bytes], bytes | None]]]


def _echoed(request: Message, **extra: str) -> dict[str, str | bytes]:
    return {"11": request.get("11"), "41": request.get("41"), "39": "00", **extra}


class _Host:
    """A one-connection ISO 8583 host on 127.0.0.1 that answers by `script`."""

    def __init__(self, script: Script, *, tls: ssl.SSLContext | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.script = script
        self.tls = tls
        self.received: list[Message] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()
                return
        with conn:
            while True:
                try:
                    request = decode_message(PROFILE, read_frame(PROFILE, conn.recv), KEY)
                except Exception:
                    return
                self.received.append(request)
                answers = self.script(request)
                if answers == [("close", {}, None)]:
                    return
                for mti, fields, key in answers:
                    conn.sendall(frame(PROFILE, encode_message(PROFILE, mti, fields, key)))

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.fixture
def host_for() -> Iterator[Callable[..., _Host]]:
    hosts: list[_Host] = []

    def start(script: Script, **options: object) -> _Host:
        host = _Host(script, **options)  # type: ignore[arg-type]
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        host.close()


def _connection(port: int, **options: object) -> Iso8583Connection:
    return Iso8583Connection(
        "127.0.0.1",
        port,
        PROFILE,
        mac_key=lambda: KEY,
        answer_timeout=options.pop("answer_timeout", 5.0),  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )


def test_an_echo_test_is_answered(host_for: Callable[..., _Host]) -> None:
    host = host_for(lambda r: [("0810", _echoed(r, **{"70": "301"}), KEY)])
    link = _connection(host.port)
    answer = link.exchange(echo_test(station=STATION, stan=1, now=NOW))
    assert (answer.mti, answer.get("39"), answer.get("70")) == ("0810", "00", "301")
    # The connection is kept: a second exchange goes over the same one.
    link.exchange(echo_test(station=STATION, stan=2, now=NOW))
    assert [m.get("11") for m in host.received] == ["000001", "000002"]
    link.close()


def test_a_late_answer_to_an_earlier_request_is_skipped(host_for: Callable[..., _Host]) -> None:
    def late_then_right(r: Message) -> list[tuple[str, dict[str, str | bytes], bytes | None]]:
        stray: dict[str, str | bytes] = {"11": "000041", "41": "TERM0001", "39": "00"}
        return [("0210", stray, KEY), ("0810", _echoed(r), KEY)]

    host = host_for(late_then_right)
    answer = _connection(host.port).exchange(echo_test(station=STATION, stan=42, now=NOW))
    assert (answer.mti, answer.get("11")) == ("0810", "000042")


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (lambda r: [("0810", _echoed(r), bytes(16))], "MAC"),
        (lambda r: [("0810", _echoed(r), None)], "no MAC"),
        (lambda r: [("0810", {**_echoed(r), "41": "TERM0002"}, KEY)], "terminal id"),
        (lambda r: [("0810", {"11": r.get("11"), "41": r.get("41")}, KEY)], "response code"),
        (lambda r: [("close", {}, None)], "connection ended"),
    ],
)
def test_an_answer_that_cannot_be_believed_leaves_the_outcome_unknown(
    host_for: Callable[..., _Host], answer: Script, why: str
) -> None:
    host = host_for(answer)
    with pytest.raises(OutcomeUnknownError, match=why) as raised:
        _connection(host.port).exchange(echo_test(station=STATION, stan=5, now=NOW), reference="k5")
    assert raised.value.idempotency_key == "k5"


def test_no_answer_in_time_leaves_the_outcome_unknown(host_for: Callable[..., _Host]) -> None:
    host = host_for(lambda r: [])
    with pytest.raises(OutcomeUnknownError, match=r"no (believable )?answer"):
        _connection(host.port, answer_timeout=0.3).exchange(
            echo_test(station=STATION, stan=6, now=NOW)
        )


def test_a_closed_port_is_unreachable_and_nothing_was_sent() -> None:
    spare = socket.create_server(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()
    with pytest.raises(HostUnreachable, match="unreachable"):
        _connection(port).exchange(echo_test(station=STATION, stan=7, now=NOW))


def test_before_the_key_exchange_only_a_sign_on_may_go() -> None:
    link = Iso8583Connection("127.0.0.1", 1, PROFILE, mac_key=lambda: None)
    with pytest.raises(HostUnreachable, match="no session MAC key"):
        # A financial message: refused before any connection is tried (port 1 is closed).
        link.exchange(Request("0200", {"11": "000001"}))
    assert sign_on(station=STATION, stan=1, now=NOW).mti == "0800"  # what may go first


def _server_context(pki: dict[str, Path]) -> ssl.SSLContext:  # noqa: F811
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server"].with_suffix(".pem"), pki["server"].with_suffix(".key"))
    return context


@pytest.mark.integration
def test_tls_with_the_pinned_ca(host_for: Callable[..., _Host], pki: dict[str, Path]) -> None:  # noqa: F811
    host = host_for(lambda r: [("0810", _echoed(r), KEY)], tls=_server_context(pki))
    tls = TlsOptions(ca_file=str(pki["ca"].with_suffix(".pem")))
    answer = _connection(host.port, tls=tls).exchange(echo_test(station=STATION, stan=8, now=NOW))
    assert answer.get("39") == "00"


@pytest.mark.integration
def test_tls_to_a_host_of_another_ca_is_unreachable(
    host_for: Callable[..., _Host],
    pki: dict[str, Path],  # noqa: F811
) -> None:
    host = host_for(lambda r: [("0810", _echoed(r), KEY)], tls=_server_context(pki))
    tls = TlsOptions(ca_file=str(pki["rogue"].with_suffix(".pem")))
    with pytest.raises(HostUnreachable, match="TLS refused"):
        _connection(host.port, tls=tls).exchange(echo_test(station=STATION, stan=9, now=NOW))
