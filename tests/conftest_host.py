"""Pytest plugin: the simulated acquirer host, in this process or on 127.0.0.1.

Load it from tests/conftest.py with ``pytest_plugins = ["tests.conftest_host"]``. Which host
a test should take is in tests/README.md; in short:

    inprocess_host      a fresh host of the test's own (its own SQLite file), reached through
                        tests.inprocess.InProcessTransport: the host's ASGI app called in this
                        process, no socket and no uvicorn. Clients come from
                        ``host.client(keys)``; code that builds its own client (start_terminal,
                        provision) takes ``client_options=host.client_options(...)``.
    inprocess_terminal  an enrolled terminal (keystore, counter, AcquirerClient) on it
    session_host        the session's one host: real uvicorn on 127.0.0.1 (``.url``, for a
                        subprocess or a command that only takes a URL) and the same app in
                        process (``.client(keys)``, ``.http``). Shared, so a test enrols its
                        own terminal, reads its own terminal's ledger and orders only, and
                        changes nothing it cannot undo (parameters and issuer keys are
                        refused); rules and faults are reset after every test.
    acquirer_host       a host of the test's own on a real socket (uvicorn per test), for what
                        needs TCP: faults that cut the connection, read timeouts, a host that
                        stops and restarts, TLS. Tests using it are integration tests.
    acquirer_terminal   an enrolled terminal on acquirer_host
    host                for a fixture shared by both kinds of test (a terminal runtime):
                        acquirer_host if the test also takes it, else inprocess_host
    loopback_host       the same for code that only takes a URL (a demo stack): acquirer_host
                        if the test also takes it, else session_host
    terminal_keys       a fresh keystore + sequence counter in a temp dir

Every handle has the same admin helpers (activation codes, rules, faults, ledger,
rejections, wallet codes, merchant-code payments).
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from emv.pan import mask_pan
from offline_queue import OfflinePayment
from simulator.host import HostApp, HostServer, create_app
from terminal.acquirer.client import AcquirerClient, Enrolment, OfflineItem
from terminal.domain.signing import offline_record
from terminal.store.keys import Keystore, SequenceCounter
from tests.inprocess import InProcessTransport

TEST_SECRET = b"test-device-secret-0123456789"
# Low scrypt cost keeps the suite fast; production uses the module default.
TEST_SCRYPT_N = 2**10
# The base URL of a host reached only in process: nothing listens there (the discard port
# on loopback: it stands for a simulated acquirer on this machine, which is what `pipos
# provision --allow-plain-http` accepts).
INPROCESS_URL = "http://127.0.0.1:9"


class HostHandle:
    """A simulated host and the admin calls tests need.

    ``url`` is where the host answers: a loopback URL when it runs under uvicorn, or
    :data:`INPROCESS_URL` (nothing listens there) when it is reached only in process.
    ``transport`` is the in-process transport onto its app (None: TCP only); ``http``, the
    admin client, and :meth:`client` use it when there is one. ``server`` is the uvicorn
    server (None in process). ``app`` is the host application (``app.host`` the host,
    ``app.host.store`` its SQLite store).
    """

    def __init__(
        self,
        server: HostServer | None = None,
        *,
        app: HostApp | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if server is not None:
            app = server.app
        if app is None:
            raise ValueError("a host handle needs a server or an app")
        self.server = server
        self.app = app
        self.transport = transport
        self.url = server.url if server is not None else INPROCESS_URL
        self.db_path = Path(app.host.store.path)
        self.http = httpx.Client(base_url=self.url, timeout=10, transport=transport)

    def close(self) -> None:
        self.http.close()

    # --- clients --------------------------------------------------------------------------

    def client_options(self, **options: Any) -> dict[str, Any]:
        """AcquirerClient keyword arguments reaching this host: `options` plus, when the host
        is in process, its transport (for start_terminal's and provision's client_options)."""
        if self.transport is not None:
            options.setdefault("transport", self.transport)
        return options

    def client(self, keys: TerminalKeys, **kwargs: Any) -> AcquirerClient:
        """A terminal's AcquirerClient on this host (no-op sleep, 10 s read timeout)."""
        return make_client(self.url, keys, **self.client_options(**kwargs))

    # --- admin ----------------------------------------------------------------------------

    def _ok(self, response: httpx.Response) -> Any:
        response.raise_for_status()
        return response.json()

    def activation_code(self, merchant_id: str = "M0001") -> str:
        data = self._ok(
            self.http.post("/admin/activation-codes", json={"merchant_id": merchant_id})
        )
        return str(data["code"])

    def set_rules(self, **rules: Any) -> None:
        self._ok(self.http.put("/admin/rules", json=rules))

    def set_issuer_key(self, pan_prefix: str, imk_ac: bytes, **options: Any) -> None:
        body = {pan_prefix: {"imk_ac": imk_ac.hex(), **options}}
        self._ok(self.http.put("/admin/issuer-keys", json=body))

    def set_parameters(self, params: dict[str, Any]) -> int:
        return int(self._ok(self.http.put("/admin/parameters", json=params))["version"])

    def set_fault(
        self, path: str, mode: str, *, times: int | None = None, delay_ms: int = 0
    ) -> None:
        body = {path: {"mode": mode, "times": times, "delay_ms": delay_ms}}
        self._ok(self.http.put("/admin/faults", json=body))

    def clear_faults(self) -> None:
        self._ok(self.http.delete("/admin/faults"))

    def faults(self) -> dict[str, dict[str, Any]]:
        """The faults armed, by path, each with its `hits` so far."""
        return dict(self._ok(self.http.get("/admin/faults")))

    def ledger(self, terminal_id: str | None = None) -> list[dict[str, Any]]:
        params = {"terminal_id": terminal_id} if terminal_id else None
        return list(self._ok(self.http.get("/admin/ledger", params=params)))

    def events(self) -> list[dict[str, Any]]:
        return list(self._ok(self.http.get("/admin/events")))

    def rejections(self) -> list[dict[str, Any]]:
        return list(self._ok(self.http.get("/admin/rejections")))

    def qr_orders(self, terminal_id: str | None = None) -> list[dict[str, Any]]:
        orders = list(self._ok(self.http.get("/admin/qr/orders")))
        return [o for o in orders if terminal_id is None or o["terminal_id"] == terminal_id]

    def host_public_key(self) -> bytes:
        data = self._ok(self.http.get("/v1/host-key"))
        return base64.b64decode(data["host_public_key"])

    @property
    def host_key_fingerprint(self) -> str:
        """What a technician pins: `pipos provision --host-key` (printed with each code)."""
        return self.app.host.host_key_fingerprint

    def provision_options(self) -> dict[str, Any]:
        """provision()'s pin and transport for this host: the host key pinned, plain HTTP
        allowed (the simulated host is on loopback or in this process)."""
        return {"host_key": self.host_key_fingerprint, "allow_plain_http": True}

    def set_unreferenced_refund_limit(self, merchant_id: str, limit: int) -> None:
        path = f"/admin/merchants/{merchant_id}/unreferenced-refund-limit"
        self._ok(self.http.put(path, json={"limit": limit}))

    def status(self) -> dict[str, Any]:
        return dict(self._ok(self.http.get("/admin/status")))

    # --- the simulated phone's side (simulator.wallet, without a socket) -------------------

    def register_wallet_code(self, record: dict[str, Any]) -> None:
        """A PhoneWallet ``register=``: its issued code, known to the host."""
        self._ok(self.http.post("/admin/qr/wallet-codes", json=record))

    def pay_merchant_code(
        self, payload: str, *, wallet: str = "sim-wallet", result: str = "paid"
    ) -> dict[str, Any]:
        """The phone paid a merchant-presented code: the provider notifies the host
        (simulator.wallet.pay_merchant_code; raises httpx.HTTPStatusError on a refusal)."""
        body = {"payload": payload, "wallet": wallet, "result": result}
        return dict(self._ok(self.http.post("/qr/wallet/notify", json=body)))


class SharedHostError(AssertionError):
    """A test asked the session's shared host for what only a host of its own can give."""


class SharedHostHandle(HostHandle):
    """The session host as one test sees it: shared with every other test of the session.

    Refused, because another test would see them: parameters and issuer keys (the host keeps
    them for every terminal, and there is no undo) and the whole ledger, rejection or event
    list (ask for one terminal's ledger or orders). Rules and faults are reset after the test.
    """

    def __init__(self, server: HostServer, transport: httpx.BaseTransport) -> None:
        super().__init__(server, transport=transport)

    def _refuse(self, what: str) -> SharedHostError:
        return SharedHostError(
            f"session_host is shared by every test: {what}; take inprocess_host (a host of "
            "the test's own) instead"
        )

    def set_issuer_key(self, pan_prefix: str, imk_ac: bytes, **options: Any) -> None:
        raise self._refuse("issuer keys would apply to every terminal's cards")

    def set_parameters(self, params: dict[str, Any]) -> int:
        raise self._refuse("parameters would apply to every terminal")

    def ledger(self, terminal_id: str | None = None) -> list[dict[str, Any]]:
        if terminal_id is None:
            raise self._refuse("the whole ledger holds other tests' transactions")
        return super().ledger(terminal_id)

    def events(self) -> list[dict[str, Any]]:
        raise self._refuse("the event list holds other tests' events")

    def rejections(self) -> list[dict[str, Any]]:
        raise self._refuse("the rejection list holds other tests' rejections")

    def qr_orders(self, terminal_id: str | None = None) -> list[dict[str, Any]]:
        if terminal_id is None:
            raise self._refuse("the order list holds other tests' orders")
        return super().qr_orders(terminal_id)

    def reset(self) -> None:
        """What one test may have changed, back as it was for the next: no faults armed,
        the default rules (two requests in process, about 3 ms)."""
        self.clear_faults()
        self.set_rules()


@contextmanager
def inprocess_host_at(db_path: Path, **app_options: Any) -> Iterator[HostHandle]:
    """A host of its own on `db_path`, in process; `app_options` go to create_app (clock,
    token, timestamp_window, verifier, admin_token)."""
    app = create_app(db_path, **app_options)
    transport = InProcessTransport(app)
    handle = HostHandle(app=app, transport=transport)
    try:
        yield handle
    finally:
        handle.close()
        transport.shutdown()
        app.host.store.close()


@pytest.fixture
def inprocess_host(tmp_path: Path) -> Iterator[HostHandle]:
    with inprocess_host_at(tmp_path / "acquirer.sqlite3") as handle:
        yield handle


@pytest.fixture
def host(request: pytest.FixtureRequest) -> HostHandle:
    """The test's own host, for fixtures both kinds of test share (a terminal): acquirer_host
    when the test takes it too (it needs a real socket), else inprocess_host."""
    name = "acquirer_host" if "acquirer_host" in request.fixturenames else "inprocess_host"
    handle: HostHandle = request.getfixturevalue(name)
    return handle


@pytest.fixture
def loopback_host(request: pytest.FixtureRequest) -> HostHandle:
    """A host on 127.0.0.1, for code that only takes a URL (a demo stack, a command), in a
    fixture both kinds of test share: acquirer_host when the test takes it too (to stop it,
    to have it alone), else session_host."""
    name = "acquirer_host" if "acquirer_host" in request.fixturenames else "session_host"
    handle: HostHandle = request.getfixturevalue(name)
    return handle


@pytest.fixture(scope="session")
def _session_host_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[HostServer, InProcessTransport]]:
    server = HostServer(tmp_path_factory.mktemp("session-host") / "acquirer.sqlite3")
    server.start()
    transport = InProcessTransport(server.app)
    try:
        yield server, transport
    finally:
        transport.shutdown()
        server.stop()


@pytest.fixture
def session_host(
    _session_host_server: tuple[HostServer, InProcessTransport],
) -> Iterator[SharedHostHandle]:
    server, transport = _session_host_server
    handle = SharedHostHandle(server, transport)
    try:
        yield handle
    finally:
        handle.reset()
        handle.close()


@pytest.fixture
def acquirer_host(tmp_path: Path) -> Iterator[HostHandle]:
    server = HostServer(tmp_path / "acquirer.sqlite3")
    server.start()
    handle = HostHandle(server)
    try:
        yield handle
    finally:
        handle.close()
        server.stop()


@dataclass
class TerminalKeys:
    directory: Path
    keystore: Keystore
    sequence: SequenceCounter


@pytest.fixture
def terminal_keys(tmp_path: Path) -> Iterator[TerminalKeys]:
    directory = tmp_path / "terminal"
    ks = Keystore.create(directory, TEST_SECRET, serial="PIPOS-TEST-1", scrypt_n=TEST_SCRYPT_N)
    seq = SequenceCounter(directory / "sequence.json")
    try:
        yield TerminalKeys(directory, ks, seq)
    finally:
        seq.close()


@dataclass
class AcquirerTerminal:
    keys: TerminalKeys
    client: AcquirerClient
    enrolment: Enrolment
    host: HostHandle

    @property
    def keystore(self) -> Keystore:
        return self.keys.keystore

    @property
    def terminal_id(self) -> str:
        return self.enrolment.terminal_id


def _bcd(value: int, digits: int) -> bytes:
    return bytes.fromhex(f"{value:0{digits}d}")


def card_emv(
    pan: str, amount: int, currency: int = 826, *, atc: int = 0x1C
) -> tuple[dict[str, bytes], int | None]:
    """The chip data of an online authorisation with a real ARQC, and the PAN sequence
    number to send with it: for a virtual card's PAN computed with its issuer's key and
    scheme (the simulated host holds those keys, simulator.host.issuers, and verifies the
    ARQC); for any other PAN under a test key the host does not hold (checked `no_key`).
    The host declines an authorisation without an ARQC by default."""
    from emv import cryptogram
    from simulator.cards import list_profiles, load_profile
    from simulator.host.issuers import virtual_issuer_keys

    psn: int | None = 1
    spec: dict[str, Any] = {"imk_ac": "0123456789ABCDEFFEDCBA9876543210", "session_key": "common"}
    for name in list_profiles():
        profile = load_profile(name)
        if profile.pan == pan:
            psn = profile.pan_sequence_number
            spec = virtual_issuer_keys()[pan]
    emv = {
        "9F02": _bcd(amount, 12),
        "9F03": _bcd(0, 12),
        "9F1A": _bcd(826, 4),
        "95": bytes(5),
        "5F2A": _bcd(currency, 4),
        "9A": bytes.fromhex("261125"),
        "9C": b"\x00",
        "9F37": bytes.fromhex("A1B2C3D4"),
        "82": bytes.fromhex("1980"),
        "9F36": atc.to_bytes(2, "big"),
        "9F10": bytes.fromhex("0110A00003220000000000000000000000FF"),
    }
    master = cryptogram.derive_icc_master_key_option_a(bytes.fromhex(spec["imk_ac"]), pan, psn)
    if spec.get("session_key") == "mastercard":
        session = cryptogram.derive_mastercard_session_key(master, atc, emv["9F37"])
    else:
        session = cryptogram.derive_common_session_key(master, atc)
    iad = {"full": emv["9F10"], "cvr": emv["9F10"][2:8]}.get(str(spec.get("iad", "none")))
    data = cryptogram.build_ac_data(
        amount_authorised=amount,
        amount_other=0,
        terminal_country_code=826,
        tvr=bytes(5),
        transaction_currency_code=currency,
        transaction_date=datetime.date(2026, 11, 25),
        transaction_type=0,
        unpredictable_number=emv["9F37"],
        aip=emv["82"],
        atc=atc,
        iad=iad,
    )
    padding: Literal[1, 2] = 1 if int(spec.get("padding", 2)) == 1 else 2
    emv["9F26"] = cryptogram.generate_ac(session, data, padding=padding)
    return emv, psn


def _aid_for(pan: str) -> str:
    """The AID a test payment without one is read with (Visa or Mastercard credit)."""
    return "A0000000031010" if pan.startswith("4") else "A0000000041010"


def with_chip_data(payment: OfflinePayment) -> OfflinePayment:
    """`payment` as a card gives it: a payment without a cryptogram (9F26) gets the chip
    data of :func:`card_emv` (its ARQC, ATC, ...; what it names itself wins), an AID and the
    PAN sequence number the cryptogram was made with. The checkout queues no card payment
    without them, and the host and `pipos queue import` refuse one whose signed record lacks
    them (docs/protocol.md, "Offline payments")."""
    if "9F26" in {k.upper() for k in payment.emv}:
        return payment
    chip, psn = card_emv(payment.card.pan, payment.amount, payment.currency)
    emv = {k: v.hex().upper() for k, v in chip.items()} | {
        k.upper(): v.upper() for k, v in payment.emv.items()
    }
    card = payment.card
    if card.pan_sequence is None:
        card = replace(card, pan_sequence=psn)
    return replace(payment, emv=emv, aid=payment.aid or _aid_for(card.pan), card=card)


def signed_payment(payment: OfflinePayment, keystore: Keystore) -> OfflinePayment:
    """`payment` (:func:`with_chip_data`) signed by `keystore` as the checkout signs what it
    approved offline (terminal.checkout.core ``_signed_record``): the record the host and
    `pipos queue import` check the payment against."""
    payment = with_chip_data(payment)
    record = offline_record(
        transaction_id=payment.transaction_id,
        terminal_id=keystore.terminal_id or "",
        amount=payment.amount,
        currency=payment.currency,
        captured_at=payment.captured_at,
        masked_pan=mask_pan(payment.card.pan),
        aid=payment.aid or "",
        cryptogram=payment.emv.get("9F26", ""),
        atc=payment.emv.get("9F36", ""),
    )
    return replace(
        payment, signed_record=record, signature=keystore.sign(record), key_id=keystore.key_id
    )


def signed_item(keystore: Keystore, **fields: Any) -> OfflineItem:
    """An offline upload item carrying the terminal's signed record of exactly `fields`; an
    item without a cryptogram gets a card's chip data first, as :func:`with_chip_data`."""
    item = OfflineItem(**fields)
    if "9F26" not in {k.upper() for k in item.emv}:
        chip, psn = card_emv(item.pan, item.amount, item.currency)
        item = replace(
            item,
            emv=chip | {k.upper(): v for k, v in item.emv.items()},
            aid=item.aid or _aid_for(item.pan),
            pan_sequence=psn if item.pan_sequence is None else item.pan_sequence,
        )
    captured = item.captured_at if item.captured_at is not None else 1_700_000_000
    emv = {k.upper(): v.hex().upper() for k, v in item.emv.items()}
    record = offline_record(
        transaction_id=item.offline_id,
        terminal_id=keystore.terminal_id or "",
        amount=item.amount,
        currency=item.currency,
        captured_at=captured,
        masked_pan=mask_pan(item.pan),
        aid=item.aid or "",
        cryptogram=emv.get("9F26", ""),
        atc=emv.get("9F36", ""),
    )
    return replace(
        item,
        captured_at=captured,
        signed_record=record,
        signature=keystore.sign(record),
        key_id=keystore.key_id,
    )


def make_client(host_url: str, keys: TerminalKeys, **kwargs: Any) -> AcquirerClient:
    kwargs.setdefault("sleep", lambda _seconds: None)
    kwargs.setdefault("read_timeout", 10.0)
    return AcquirerClient(host_url, keys.keystore, keys.sequence, **kwargs)


@pytest.fixture
def acquirer_client_factory() -> Any:
    """`factory(url, terminal_keys, **client_kwargs) -> AcquirerClient` (no-op sleep), for a
    host on a socket; a host in process gives its clients with ``host.client(keys)``."""
    return make_client


@contextmanager
def enrolled_terminal(host: HostHandle, keys: TerminalKeys) -> Iterator[AcquirerTerminal]:
    """`keys` enrolled on `host` (a fresh activation code), with its client."""
    client = host.client(keys)
    try:
        enrolment = client.enrol(host.activation_code())
        yield AcquirerTerminal(keys, client, enrolment, host)
    finally:
        client.close()


@pytest.fixture
def inprocess_terminal(
    inprocess_host: HostHandle, terminal_keys: TerminalKeys
) -> Iterator[AcquirerTerminal]:
    with enrolled_terminal(inprocess_host, terminal_keys) as terminal:
        yield terminal


@pytest.fixture
def acquirer_terminal(
    acquirer_host: HostHandle, terminal_keys: TerminalKeys
) -> Iterator[AcquirerTerminal]:
    with enrolled_terminal(acquirer_host, terminal_keys) as terminal:
        yield terminal


__all__ = [
    "INPROCESS_URL",
    "TEST_SCRYPT_N",
    "TEST_SECRET",
    "AcquirerTerminal",
    "HostHandle",
    "SharedHostError",
    "SharedHostHandle",
    "TerminalKeys",
    "acquirer_client_factory",
    "acquirer_host",
    "acquirer_terminal",
    "card_emv",
    "enrolled_terminal",
    "host",
    "inprocess_host",
    "inprocess_host_at",
    "inprocess_terminal",
    "loopback_host",
    "make_client",
    "session_host",
    "signed_item",
    "signed_payment",
    "terminal_keys",
    "with_chip_data",
]
