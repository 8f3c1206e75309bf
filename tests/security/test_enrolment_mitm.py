"""A man in the middle at enrolment (issue 16, item 2): a proxy on loopback between the
terminal and its acquirer swaps the host key in the enrolment answer and re-signs every
answer with its own key. Trusting the first key it saw, the terminal then showed a sale
approved (auth code MITM01) that the host's ledger has as declined.

Now `pipos provision` pins the host (`--host-key ed25519:...`, printed next to the activation
code, or the acquirer's CA): the swapped key stops provisioning with both fingerprints named
and nothing stored; without a pin it does not enrol at all; plain http:// is refused except
to a simulated acquirer on this machine that it is told about (`--allow-plain-http`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from simulator.host import verify
from terminal.acquirer.client import AuthorisationRequest, host_key_fingerprint
from terminal.cli import main
from terminal.service.provision import ProvisionError, check_acquirer_url, provision
from terminal.store.keys import Keystore, SequenceCounter, secret_from_file
from tests.conftest_host import TEST_SCRYPT_N, TEST_SECRET, HostHandle, card_emv, make_client
from tests.conftest_host import TerminalKeys as Keys

pytestmark = pytest.mark.integration

PIN = "740913"
CLIENT = {"read_timeout": 10.0, "retries": 1, "max_reversal_attempts": 2, "backoff": (0.01, 0.02)}


class Mitm:
    """An HTTP proxy on 127.0.0.1 that forwards to `upstream` and answers for the host: its
    own key in the enrolment answer, the parameters and every answer re-signed with it,
    and any declined authorisation turned into an approval with auth code MITM01."""

    def __init__(self, upstream: str) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.public = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.upstream = httpx.Client(base_url=upstream, timeout=10)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy.forward(self)

            def do_POST(self) -> None:
                proxy.forward(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {
            k: v for k, v in handler.headers.items() if k.lower() not in ("host", "connection")
        }
        answer = self.upstream.request(handler.command, handler.path, headers=headers, content=body)
        content = self.rewrite(handler.path, answer.status_code, answer.content)
        out = {"Content-Type": "application/json", "Content-Length": str(len(content))}
        seq = handler.headers.get("X-Pipos-Seq", "")
        if seq.isdigit():
            out["X-Pipos-Host-Key-Id"] = verify.key_id_for(self.public)
            out["X-Pipos-Host-Signature"] = verify.sign_response(
                self.key,
                terminal_id=handler.headers.get("X-Pipos-Terminal", "-"),
                seq=int(seq),
                status=answer.status_code,
                body=content,
            )
        handler.send_response(answer.status_code)
        for name, value in out.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(content)

    def rewrite(self, path: str, status: int, content: bytes) -> bytes:
        if status != 200:
            return content
        data = json.loads(content)
        if path.startswith("/v1/enrol"):
            data["host_public_key"] = verify.b64encode(self.public)
            data["host_key_id"] = verify.key_id_for(self.public)
            data.pop("host_key_fingerprint", None)
        elif path.startswith("/v1/parameters"):
            document = str(data["document"]).encode()
            data["signature"] = verify.b64encode(self.key.sign(document))
            data["host_key_id"] = verify.key_id_for(self.public)
        elif path.startswith("/v1/authorisations") and data.get("outcome") == "declined":
            data.update(outcome="approved", response_code="00", auth_code="MITM01", arc="3030")
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.upstream.close()


@pytest.fixture
def mitm(acquirer_host: HostHandle) -> Iterator[Mitm]:
    proxy = Mitm(acquirer_host.url)
    try:
        yield proxy
    finally:
        proxy.close()


def _provision(tmp: Path, host_url: str, code: str, **kw: Any) -> Any:
    return provision(
        host_url=host_url,
        activation_code=code,
        config_path=tmp / "etc" / "terminal.toml",
        technician_secret=PIN,
        data_dir=tmp / "data",
        scrypt_n=TEST_SCRYPT_N,
        client_options=CLIENT,
        **kw,
    )


def test_the_proxy_does_what_the_issue_saw_to_a_terminal_that_pins_nothing(
    mitm: Mitm, acquirer_host: HostHandle, tmp_path: Path
) -> None:
    """The attack itself, on a client that trusts the first key it sees: the sale the host
    declined shows as approved, MITM01. (What provisioning must never allow.)"""
    directory = tmp_path / "terminal"
    keys = Keys(
        directory,
        Keystore.create(directory, TEST_SECRET, scrypt_n=TEST_SCRYPT_N),
        SequenceCounter(directory / "sequence.json"),
    )
    try:
        with make_client(mitm.url, keys) as client:
            enrolment = client.enrol(acquirer_host.activation_code())
            assert enrolment.host_public_key == mitm.public
            emv, psn = card_emv("4761739001010010", 2051)  # amounts ending 51: declined
            sale = client.authorise(
                AuthorisationRequest(2051, 826, "4761739001010010", pan_sequence=psn, emv=emv)
            )
        assert (sale.approved, sale.auth_code) == (True, "MITM01")
        [row] = acquirer_host.ledger(enrolment.terminal_id)
        assert (row["status"], row["response_code"]) == ("declined", "51")
    finally:
        keys.sequence.close()


def test_provisioning_with_the_pinned_key_stops_at_the_swapped_one(
    mitm: Mitm, acquirer_host: HostHandle, tmp_path: Path
) -> None:
    real = acquirer_host.host_key_fingerprint
    swapped = host_key_fingerprint(mitm.public)
    with pytest.raises(ProvisionError) as err:
        _provision(
            tmp_path, mitm.url, acquirer_host.activation_code(), host_key=real,
            allow_plain_http=True,
        )  # fmt: skip
    message = str(err.value)
    assert real in message
    assert swapped in message
    # Nothing of the host's answer was stored: no identity, no parameters, no configuration.
    assert not (tmp_path / "etc" / "terminal.toml").exists()
    assert not (tmp_path / "data" / "parameters.json").exists()
    secret = secret_from_file(tmp_path / "data" / "device-secret")
    keystore = Keystore.open(tmp_path / "data", secret)
    assert keystore.terminal_id is None
    assert keystore.host_public_key is None


def test_the_cli_takes_the_pin_and_names_both_keys(
    mitm: Mitm, acquirer_host: HostHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pin = tmp_path / "pin"
    pin.write_text(PIN + "\n")
    real = acquirer_host.host_key_fingerprint
    status = main(
        ["provision", "--host", mitm.url, "--activation-code", acquirer_host.activation_code(),
         "--host-key", real, "--allow-plain-http", "--data-dir", str(tmp_path / "data"),
         "--config", str(tmp_path / "terminal.toml"), "--technician-pin-file", str(pin)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1
    assert real in err
    assert host_key_fingerprint(mitm.public) in err
    assert not (tmp_path / "terminal.toml").exists()


def test_without_a_pin_provisioning_does_not_enrol(
    mitm: Mitm, acquirer_host: HostHandle, tmp_path: Path
) -> None:
    code = acquirer_host.activation_code()
    with pytest.raises(ProvisionError, match="--host-key"):
        _provision(tmp_path, mitm.url, code, allow_plain_http=True)
    assert not (tmp_path / "etc" / "terminal.toml").exists()
    assert not (tmp_path / "data").exists()  # refused before anything was written
    assert acquirer_host.status()["terminals"] == 0


def test_the_right_pin_against_the_real_host_provisions(
    acquirer_host: HostHandle, tmp_path: Path
) -> None:
    result = _provision(
        tmp_path, acquirer_host.url, acquirer_host.activation_code(),
        host_key=acquirer_host.host_key_fingerprint, allow_plain_http=True,
    )  # fmt: skip
    assert result.action == "provisioned"


@pytest.mark.parametrize(
    "url",
    ["http://acquirer.example:8600", "http://10.0.0.7:8600", "http://[fe80::1]:8600"],
)
def test_plain_http_to_anything_but_loopback_is_refused(url: str, tmp_path: Path) -> None:
    fingerprint = "ed25519:" + "ab" * 32
    with pytest.raises(ProvisionError, match="only for a simulated acquirer on this machine"):
        _provision(tmp_path, url, "CODE", host_key=fingerprint, allow_plain_http=True)
    with pytest.raises(ProvisionError, match="plain http:// is refused"):
        _provision(tmp_path, url, "CODE", host_key=fingerprint)
    assert not (tmp_path / "data").exists()


def test_plain_http_to_loopback_needs_to_be_asked_for() -> None:
    with pytest.raises(ProvisionError, match="--allow-plain-http"):
        check_acquirer_url("http://127.0.0.1:8600")
    for url in ("http://127.0.0.1:8600", "http://localhost:8600", "http://[::1]:8600"):
        check_acquirer_url(url, allow_plain_http=True)
    check_acquirer_url("https://acquirer.example:8600")


def test_a_malformed_pin_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match="64 hex digits"):
        _provision(tmp_path, "https://acquirer.example", "CODE", host_key="ed25519:abc")
