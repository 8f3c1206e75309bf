"""The terminal with its payments on the ISO 8583 link (docs/iso8583.md), end to end over
real TCP on loopback: the checkout, the offline queue's forwarder and the end of day through
terminal.acquirer.iso8583.link to the simulated ISO 8583 host (simulator/host/iso8583), the
money checked in the host's ledger. The demo terminal (`pipos run --acquirer-protocol
iso8583`), a provisioned one (`pipos provision --acquirer-protocol iso8583`), and `pipos
acquirer --protocol iso8583` as a process of its own. Integration tests."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator.host.faults import Fault
from terminal.acquirer.client import AcquirerError, TlsOptions
from terminal.acquirer.iso8583.link import load_terminal_master_key
from terminal.acquirer.iso8583.settings import Iso8583Settings, open_link
from terminal.api.stack import DemoStack, start_demo_stack, start_provisioned_stack
from terminal.cli import main
from terminal.domain.errors import ConfigurationError
from terminal.service.config import load_config
from terminal.service.doctor import run_doctor
from terminal.service.provision import Iso8583Provisioning, ProvisionError, provision
from tests.conftest_host import TEST_SCRYPT_N, TEST_SECRET, AcquirerTerminal, HostHandle
from tests.pipos_run import pipos_run
from tests.terminal.acquirer.test_acquirer_tls import pki  # noqa: F401 - a fixture
from tests.terminal.cli.test_run_provisioned import _set_merchant_pin

pytestmark = pytest.mark.integration

PIN = "2468"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoStack]:
    """The demo terminal on its own simulated acquirer, payments over ISO 8583."""
    s = start_demo_stack(
        tmp_path,
        secret=TEST_SECRET,
        scrypt_n=TEST_SCRYPT_N,
        pin=PIN,
        background=False,
        acquirer_protocol="iso8583",
    )
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def api(demo: DemoStack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=demo.api.url, headers={"Authorization": f"Bearer {demo.token}"}, timeout=60
    ) as client:
        yield client


def _pay(stack: DemoStack, api: httpx.Client, amount: int, card: str = "visa") -> dict[str, Any]:
    started = api.post("/api/v1/sales", json={"amount": amount, "currency": 978})
    assert started.status_code == 202, started.text
    assert api.post("/api/v1/simulator/present", json={"card": card}).status_code == 200
    stack.checkout.wait(started.json()["id"], timeout=60)
    answer = api.get(f"/api/v1/transactions/{started.json()['id']}")
    return dict(answer.json())


def _ledger(stack: DemoStack) -> list[tuple[str, str, int]]:
    assert stack.host is not None
    rows = stack.host.app.host.store.query(
        "SELECT kind, status, amount FROM transactions ORDER BY created_at, rowid"
    )
    return [(str(r["kind"]), str(r["status"]), int(r["amount"])) for r in rows]


def test_sale_refund_void_and_end_of_day_over_iso8583(demo: DemoStack, api: httpx.Client) -> None:
    assert demo.runtime.iso8583 is not None  # the link the checkout pays through
    sale = _pay(demo, api, 1234)
    assert sale["state"] == "approved", sale
    # The host's reference on the ISO 8583 link is the RRN (field 37, an12).
    assert len(sale["host_ref"]) == 12
    assert sale["host_ref"].isdigit()
    refund = api.post(f"/api/v1/transactions/{sale['id']}/refund", json={"pin": PIN, "amount": 234})
    assert refund.status_code == 200, refund.text
    assert refund.json()["state"] == "approved"
    second = _pay(demo, api, 2000, card="mastercard")
    assert second["state"] == "approved", second
    void = api.post(f"/api/v1/transactions/{second['id']}/void", json={"pin": PIN})
    assert void.status_code == 200, void.text
    assert void.json()["state"] == "approved"
    assert _ledger(demo) == [
        ("sale", "approved", 1234),
        ("refund", "approved", 234),
        ("sale", "voided", 2000),
    ]
    # The ISO 8583 host verified the card's ARQC from field 55 as the pipos host does.
    assert demo.host is not None
    sales = demo.host.app.host.store.query(
        "SELECT arqc_status FROM transactions WHERE kind = 'sale'"
    )
    assert [str(r["arqc_status"]) for r in sales] == ["valid", "valid"]
    closed = api.post("/api/v1/end-of-day", json={"pin": PIN})
    assert closed.status_code == 200, closed.text
    assert closed.json()["in_balance"] is True  # the 0510 said 00
    batches = demo.host.app.host.store.query("SELECT batch_id FROM batches")
    assert len(batches) == 1


def test_a_host_that_went_down_sends_the_sale_offline_then_it_is_advised_once(
    demo: DemoStack, api: httpx.Client
) -> None:
    assert _pay(demo, api, 500)["state"] == "approved"  # the link's connection is open
    assert demo.host is not None
    demo.host.stop_listening()  # the ISO 8583 host goes down, and closes that connection
    started = time.monotonic()
    offline = _pay(demo, api, 700)
    # Not a lost answer: the kept connection is seen closed before anything is sent on it,
    # the new one is refused, nothing reached the host, the card's offline approval holds.
    assert offline["state"] == "approved_offline", offline
    assert time.monotonic() - started < 5
    demo.host.listen_again()
    first = demo.checkout.sync_offline()
    assert (first["accepted"], first["remaining"]) == (1, 0), first
    again = demo.checkout.sync_offline()
    assert again["accepted"] == 0
    assert _ledger(demo) == [("sale", "approved", 500), ("offline_sale", "approved", 700)]


def test_a_lost_answer_is_reversed_and_the_sale_declined(
    demo: DemoStack, api: httpx.Client
) -> None:
    assert demo.host is not None
    # The host books the 0200 and its answer never comes (every try of the link's).
    demo.host.app.faults.set("/v1/iso8583/0200", Fault("drop_after_commit", times=3))
    lost = _pay(demo, api, 800)
    assert (lost["state"], lost["result"]) == ("declined", "host_no_response"), lost
    demo.host.app.faults.clear()
    assert _ledger(demo) == [("sale", "reversed", 800)]
    assert not demo.checkout.owes_the_host()
    # Until the bank is heard again the terminal keeps sales within the limits offline (as
    # on the pipos protocol); the background loop's probe is an echo test (0800, 301).
    assert demo.checkout.host_online is False
    demo.checkout.probe_host()
    assert demo.checkout.host_online is True
    assert _pay(demo, api, 900)["state"] == "approved"


def test_the_demo_on_iso8583_needs_its_own_simulated_acquirer(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="its own simulated acquirer"):
        start_demo_stack(
            tmp_path,
            host_url="http://127.0.0.1:9",
            secret=TEST_SECRET,
            scrypt_n=TEST_SCRYPT_N,
            acquirer_protocol="iso8583",
        )
    with pytest.raises(ConfigurationError, match="unknown acquirer protocol"):
        start_demo_stack(tmp_path, secret=TEST_SECRET, acquirer_protocol="x25")


# --- a provisioned terminal ------------------------------------------------------------


def _provision(host: HostHandle, tmp_path: Path, **options: Any) -> Any:
    return provision(
        host_url=host.url,
        activation_code=host.activation_code(),
        config_path=tmp_path / "etc" / "terminal.toml",
        technician_secret="270513",
        data_dir=tmp_path / "data",
        reader_url="sim:visa",
        scrypt_n=TEST_SCRYPT_N,
        **host.provision_options(),
        **options,
    )


def test_a_terminal_provisioned_for_iso8583_pays_over_it(
    acquirer_host: HostHandle, tmp_path: Path
) -> None:
    server = acquirer_host.server
    assert server is not None
    address, port = server.start_iso8583()
    # Enrolled with the terminal-management host first (the pipos protocol) ...
    first = _provision(acquirer_host, tmp_path)
    assert first.protocol == "pipos"
    # ... then the acquirer issues its TID, MID and TMK for it, and the technician moves the
    # payments to the ISO 8583 link with them (a re-run of pipos provision).
    issued = server.register_iso8583(first.terminal_id)
    link = Iso8583Provisioning(
        address=f"{address}:{port}",
        terminal_id=str(issued["tid"]),
        merchant_id=str(issued["mid"]),
        tmk_key_block=str(issued["tmk_key_block"]),
        kbpk=server.kif_test_kbpk(),
    )
    # A block the facility's key does not open is refused before anything is written.
    damaged = str(issued["tmk_key_block"])[:-2] + (
        "00" if not issued["tmk_key_block"].endswith("00") else "11"
    )
    config_path = tmp_path / "etc" / "terminal.toml"
    before = config_path.read_bytes()
    with pytest.raises(ProvisionError, match="--tmk-key-block"):
        _provision(
            acquirer_host,
            tmp_path,
            acquirer_protocol="iso8583",
            iso8583=Iso8583Provisioning(**{**link.__dict__, "tmk_key_block": damaged}),
        )
    assert config_path.read_bytes() == before
    result = _provision(acquirer_host, tmp_path, acquirer_protocol="iso8583", iso8583=link)
    assert result.protocol == "iso8583"
    assert len(result.tmk_check_value) == 6
    assert any("ISO 8583 to" in line for line in result.summary_lines())
    config = load_config(config_path)
    assert (config.protocol, config.iso8583_terminal_id) == ("iso8583", issued["tid"])
    audit = (config.data_dir / "audit.log").read_text()
    assert '"iso8583_tmk_loaded"' in audit
    assert str(issued["tmk_key_block"]) not in audit
    # A re-run without the link's options keeps the link and its TMK.
    again = _provision(acquirer_host, tmp_path)
    assert (again.protocol, again.tmk_check_value) == ("iso8583", "")

    _set_merchant_pin(config_path, tmp_path, "5831")
    stack, _, _ = start_provisioned_stack(
        config_path, bind="127.0.0.1", port=0, printer_url=None, pin_file=None, token_file=None
    )
    try:
        assert stack.runtime.iso8583 is not None
        with httpx.Client(
            base_url=stack.api.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=60
        ) as till:
            started = till.post("/api/v1/sales", json={"amount": 4321, "currency": 826})
            assert started.status_code == 202, started.text
            record = stack.checkout.wait(started.json()["id"], timeout=60)
            assert record.state == "approved", record
            assert len(record.host_ref) == 12
            # The ISO 8583 host goes down: a sale within the offline limits waits in the
            # offline queue.
            server.iso8583_down()
            offline = till.post("/api/v1/sales", json={"amount": 1200, "currency": 826})
            assert stack.checkout.wait(offline.json()["id"], timeout=60).state == (
                "approved_offline"
            )
    finally:
        stack.close()
    assert [(r["kind"], r["amount"]) for r in acquirer_host.ledger()] == [("sale", 4321)]

    # pipos doctor checks the link with an echo test under the session key.
    checks = {c.name: c for c in run_doctor(config_path).checks}
    assert checks["ISO 8583 keys"].status == "pass"
    assert checks["ISO 8583 host"].status == "fail"
    assert "payments are queued offline meanwhile" in checks["ISO 8583 host"].fix
    server.iso8583_up()
    checks = {c.name: c for c in run_doctor(config_path).checks}
    assert checks["ISO 8583 host"].status == "pass", checks["ISO 8583 host"]
    assert "echo test" in checks["ISO 8583 host"].message
    # pipos sync sends what waits over the same link: one 0220 advice, once.
    assert main(["sync", "--config", str(config_path)]) == 0
    assert main(["sync", "--config", str(config_path)]) == 0
    assert [(r["kind"], r["amount"]) for r in acquirer_host.ledger()] == [
        ("sale", 4321),
        ("offline_sale", 1200),
    ]


def test_provision_refuses_a_half_given_link(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["provision", "--host", "http://127.0.0.1:9", "--activation-code", "X"]
    assert main([*base, "--iso8583-address", "127.0.0.1:8583"]) == 2
    assert "also needs --iso8583-terminal-id, --iso8583-merchant-id" in capsys.readouterr().err
    kbpk = tmp_path / "kbpk.json"
    kbpk.write_text(json.dumps({"kbpk": "00" * 7}))
    argv = [
        *base,
        "--iso8583-address=127.0.0.1:8583",
        "--iso8583-terminal-id=P0000001",
        "--iso8583-merchant-id=PM0000001",
        "--tmk-key-block=D0112K0AB00E0000",
        f"--kbpk-file={kbpk}",
    ]
    assert main(argv) == 2
    assert "16, 24 or 32 bytes, not 7" in capsys.readouterr().err


# --- the commands -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_pipos_acquirer_protocol_iso8583_serves_both(tmp_path: Path) -> None:
    port, iso_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "terminal.cli", "acquirer", "--port", str(port),
         "--db", str(tmp_path / "acquirer.sqlite3"), "--protocol", "iso8583",
         "--iso8583-port", str(iso_port)],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("ISO 8583 host:"):
                break
        assert f"127.0.0.1:{iso_port}" in lines[-1], lines
        with socket.create_connection(("127.0.0.1", iso_port), timeout=10) as sock:
            # A frame that is no message: the host closes the connection, answers nothing.
            sock.sendall(b"\x00\x04junk")
            sock.settimeout(10)
            assert sock.recv(64) == b""
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/openapi.json").status_code == 200
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the JSON host did not start"
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def test_pipos_run_acquirer_protocol_iso8583(tmp_path: Path) -> None:
    banner: list[str] = []
    token = "iso-run-token-0001"
    with pipos_run(
        tmp_path / "state",
        token,
        tmp_path / "errors.txt",
        "--acquirer-protocol",
        "iso8583",
        banner=banner,
    ) as running:
        assert any("ISO 8583 host:" in line for line in banner), banner
        with httpx.Client(
            base_url=running.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as till:
            started = till.post("/api/v1/sales", json={"amount": 1500, "currency": 978})
            assert started.status_code == 202, started.text
            assert till.post("/api/v1/simulator/present", json={"card": "visa"}).is_success
            deadline = time.monotonic() + 60
            while True:
                sale = till.get(f"/api/v1/transactions/{started.json()['id']}").json()
                if sale["state"] != "in_progress" or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert sale["state"] == "approved", sale
            assert len(sale["host_ref"]) == 12
        running.stop()


# --- TLS --------------------------------------------------------------------------------


def test_the_link_over_mutual_tls_with_the_hosts_ca_pinned(
    acquirer_terminal: AcquirerTerminal,
    pki: dict[str, Path],  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    from simulator.host.iso8583 import server_ssl_context

    server = acquirer_terminal.host.server
    assert server is not None
    context = server_ssl_context(
        pki["server"].with_suffix(".pem"),
        pki["server"].with_suffix(".key"),
        client_ca=pki["ca"].with_suffix(".pem"),  # client certificates required
    )
    address, port = server.start_iso8583(tls=context)
    keystore = acquirer_terminal.keystore
    issued = server.register_iso8583(acquirer_terminal.terminal_id)
    load_terminal_master_key(keystore, server.kif_test_kbpk(), str(issued["tmk_key_block"]))

    def link_with(tls: TlsOptions) -> Any:
        settings = Iso8583Settings(
            address, port, str(issued["tid"]), str(issued["mid"]), tls=tls,
            options={"connect_timeout": 5.0, "answer_timeout": 10.0, "retries": 1},
        )  # fmt: skip
        return open_link(acquirer_terminal.keys.directory, keystore, settings, currency=826)

    client = {
        "client_cert": str(pki["client"].with_suffix(".pem")),
        "client_key": str(pki["client"].with_suffix(".key")),
    }
    link, stores = link_with(TlsOptions(ca_file=str(pki["ca"].with_suffix(".pem")), **client))
    try:
        # Keys exchanged, signed on and an echo test answered, all under TLS.
        assert link.whoami()["protocol"] == "iso8583"
    finally:
        link.close()
        stores.close()
    # A host whose certificate is not from the pinned CA is never spoken to.
    link, stores = link_with(TlsOptions(ca_file=str(pki["rogue"].with_suffix(".pem")), **client))
    try:
        with pytest.raises(AcquirerError, match="TLS refused"):
            link.echo_test()
    finally:
        link.close()
        stores.close()


def test_the_background_loop_keeps_the_link_alive_and_rides_out_an_outage(
    demo: DemoStack, api: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    link = demo.runtime.iso8583
    assert link is not None
    assert demo.host is not None
    assert _pay(demo, api, 500)["state"] == "approved"
    link.echo_interval = 0.0  # every pass sends its echo test
    demo.host.iso8583_down()
    with caplog.at_level(logging.INFO):
        demo.runtime.start_background(interval=0.05)
        deadline = time.monotonic() + 10
        while "echo test unanswered" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    # Said once a pass, in a line: not a failed pass with its traceback.
    assert "ISO 8583 echo test unanswered" in caplog.text
    assert "background forwarding pass failed" not in caplog.text
    demo.host.iso8583_up()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not link.keep_alive():
        time.sleep(0.05)
    assert _pay(demo, api, 600)["state"] == "approved"
