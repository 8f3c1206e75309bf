"""Property-based fuzzing of every parser fed from outside the terminal.

Cards (BER-TLV, DOLs, APDU responses), files (CA public keys, terminal parameters), phones
(QR codes, wallet codes) and the acquirer (its responses) may send anything. Whatever they
send, only the project's own errors (rooted in `PiposError`) may escape: never a KeyError,
IndexError, TypeError, UnicodeError, RecursionError or a crash in a third-party library.
The atheris harnesses in fuzz/ drive the same entry points with coverage guidance.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emv import apdu, dol, tlv
from emv.capk import CaKeyStore, parse_ca_key
from emv.errors import PiposError
from emv.qr import WalletCodeTable, classify, decode_cpm, parse_mpm
from emv.qr.cpm import decode_cpm_bytes
from terminal.acquirer.client import (
    AcquirerClient,
    AuthorisationRequest,
    BrandTotals,
    OfflineItem,
    RefundRequest,
)
from terminal.domain.params import load_params, parse_params
from terminal.domain.signing import (
    HEADER_HOST_SIGNATURE,
    HEADER_SEQ,
    HEADER_TERMINAL,
    canonical_response,
)
from terminal.store.keys import Keystore, SequenceCounter

FUZZ = settings(max_examples=300, deadline=None)
FEW = settings(max_examples=120, deadline=None)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(["", "00", "A0000000031010", "ZZ", "0" * 600, "2035-12-31", "978"])
)
json_values = st.recursive(
    json_scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4)
    ),
    max_leaves=12,
)


def only_ours(call: Callable[[], object]) -> object:
    """Run `call`; a PiposError is a fine answer, anything else fails the test."""
    try:
        return call()
    except PiposError as exc:
        assert str(exc), "errors must say what was wrong"
        return exc


# --- cards: BER-TLV, DOLs, APDU responses ---------------------------------------------------

tlv_bytes = st.binary(max_size=300) | st.lists(
    st.sampled_from(
        [
            *(b"\x6f", b"\x70", b"\xa5", b"\x9f", b"\x5f\x20", b"\x81", b"\x82", b"\x83"),
            *(b"\xff", b"\x84", b"\x00", b"\x10", b"\x7f", b"\xbf\x0c", b"\x61", b"\x80"),
            b"\x02\x01\x00",
        ]
    ),
    max_size=60,
).map(b"".join)


@FUZZ
@given(tlv_bytes)
def test_tlv_decoders_raise_only_tlv_errors(data: bytes) -> None:
    result = only_ours(lambda: tlv.decode(data))
    if isinstance(result, tuple):
        # What decodes re-encodes to something that decodes to the same objects.
        assert tlv.decode(tlv.encode(result)) == result
        only_ours(lambda: tlv.flatten(result))
        only_ours(lambda: tlv.find_anywhere(result, 0x5A))
    only_ours(lambda: tlv.decode_one(data))
    only_ours(lambda: tlv.decode_one(data, 0x6F))


def _nested_templates(depth: int) -> bytes:
    nested = b""
    for _ in range(depth):
        nested = b"\x70" + tlv.encode_length(len(nested)) + nested
    return nested


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=tlv.MAX_DEPTH + 1, max_value=5000))
def test_deeply_nested_tlv_is_refused_with_a_tlv_error(depth: int) -> None:
    nested = _nested_templates(depth)
    with pytest.raises(
        tlv.TlvError, match=f"nesting no deeper than {tlv.MAX_DEPTH} levels"
    ) as caught:
        tlv.decode(nested)
    # The refusal points at the contents of the first template one level too deep.
    too_deep = _nested_templates(depth - tlv.MAX_DEPTH - 1)
    assert caught.value.offset == len(nested) - len(too_deep)


@given(st.integers(min_value=1, max_value=tlv.MAX_DEPTH))
def test_nesting_up_to_the_bound_decodes_every_level(depth: int) -> None:
    (outer,) = tlv.decode(_nested_templates(depth))
    levels = 1
    while outer.children:
        (outer,) = outer.children
        levels += 1
    assert levels == depth


@FUZZ
@given(
    st.binary(max_size=80),
    st.binary(max_size=80),
    st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=20), max_size=6),
)
def test_dol_parsers_raise_only_emv_errors(
    dol_bytes: bytes, related: bytes, data: dict[int, bytes]
) -> None:
    entries = only_ours(lambda: dol.parse_dol(dol_bytes))
    built = only_ours(lambda: dol.build_dol(dol_bytes, data))
    if isinstance(entries, tuple):
        total = only_ours(lambda: dol.dol_length(dol_bytes))
        if isinstance(built, bytes) and isinstance(total, int):
            assert len(built) == total
    only_ours(lambda: dol.split_dol_data(dol_bytes, related))


@pytest.mark.parametrize("dol_hex", ["9F0284FFFFFFFF", "9F0281FF9F0302", "9F02819F" * 3])
def test_dol_asking_for_more_than_a_command_can_carry_is_refused(dol_hex: str) -> None:
    # Found by fuzz/fuzz_dol.py: a PDOL entry with a 4-byte length made build_dol allocate
    # gigabytes. DOL data travels in one short APDU: at most 255 bytes.
    with pytest.raises(tlv.TlvError, match="at most 255 bytes"):
        dol.parse_dol(bytes.fromhex(dol_hex))


@FUZZ
@given(st.binary(max_size=300))
def test_response_apdu_parse_raises_only_apdu_errors(raw: bytes) -> None:
    response = only_ours(lambda: apdu.ResponseApdu.parse(raw))
    if isinstance(response, apdu.ResponseApdu):
        assert response.describe()
        assert isinstance(response.ok, bool)


@FUZZ
@given(st.lists(st.binary(max_size=260), min_size=1, max_size=40))
def test_apdu_exchange_takes_any_card_answers(answers: list[bytes]) -> None:
    exchange = apdu.ApduExchange(apdu.read_record(1, 1))
    exchange.start()
    for raw in answers:
        step = only_ours(lambda raw=raw: exchange.feed(raw))  # type: ignore[misc]
        if not isinstance(step, bytes):
            break  # a final response or our error


@FUZZ
@given(st.integers(min_value=-1, max_value=0x1FFFF))
def test_status_meaning_is_total(sw: int) -> None:
    only_ours(lambda: apdu.status_meaning(sw))


# --- files: CA public keys and terminal parameters ------------------------------------------


def _default_params_doc() -> dict[str, Any]:
    text = resources.files("terminal").joinpath("data/default_params.json").read_text("utf-8")
    doc = json.loads(text)
    assert isinstance(doc, dict)
    return doc


DEFAULT_PARAMS = _default_params_doc()
CA_KEY = DEFAULT_PARAMS["ca_public_keys"][0]


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _paths(value, (*prefix, i))


PARAM_PATHS = list(_paths(DEFAULT_PARAMS))[1:]
CA_PATHS = list(_paths(CA_KEY))[1:]


def _mutated(doc: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    copy = json.loads(json.dumps(doc))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return copy


@FUZZ
@given(st.sampled_from(CA_PATHS), json_values, st.booleans())
def test_ca_key_parser_raises_only_capk_errors(
    path: tuple[Any, ...], value: Any, delete: bool
) -> None:
    raw = _mutated(CA_KEY, path, value, delete)
    only_ours(lambda: parse_ca_key(raw))
    only_ours(lambda: CaKeyStore.from_json_list([raw, raw]))


@FEW
@given(json_values)
def test_ca_key_list_of_anything_raises_only_our_errors(raw: Any) -> None:
    only_ours(lambda: CaKeyStore.from_json_list(raw if isinstance(raw, list) else [raw]))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(PARAM_PATHS), json_values, st.booleans()), max_size=3))
def test_parameter_parser_raises_only_params_errors(
    edits: list[tuple[tuple[Any, ...], Any, bool]],
) -> None:
    doc: Any = DEFAULT_PARAMS
    for path, value, delete in edits:
        try:
            doc = _mutated(doc, path, value, delete)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed the path
    only_ours(lambda: parse_params(doc, "fuzz.json"))


@FEW
@given(json_values)
def test_parameter_parser_takes_any_json(doc: Any) -> None:
    only_ours(lambda: parse_params(doc, "fuzz.json"))


@pytest.fixture(scope="module")
def param_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("params") / "params.json"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_parameter_file_of_any_bytes_raises_only_params_errors(
    param_file: Path, data: st.DataObject
) -> None:
    text = json.dumps(DEFAULT_PARAMS).encode()
    choice = data.draw(st.sampled_from(["bytes", "cut", "flip"]))
    if choice == "bytes":
        raw = data.draw(st.binary(max_size=200))
    elif choice == "cut":
        raw = text[: data.draw(st.integers(0, len(text)))]
    else:
        at = data.draw(st.integers(0, len(text) - 1))
        raw = text[:at] + bytes([data.draw(st.integers(0, 255))]) + text[at + 1 :]
    param_file.write_bytes(raw)
    only_ours(lambda: load_params(param_file))


# --- phones: QR and wallet codes ------------------------------------------------------------

CPM_EXAMPLE = (
    "hQVDUFYwMWETTwegAAAAVVVVUAhQcm9kdWN0MWETTwegAAAAZmZmUAhQcm9kdWN0MmJJWggSNFZ4kBI0WF8g"
    "DkNBUkRIT0xERVIvRU1WXy0IcnVlc2RlZW5kIZ8QBwYBCgMAAACfJghYT9OF+iNLzJ82AgABnzcEbVjvEw=="
)
MPM_EXAMPLE = (
    "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678"
    "520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京"
    "540523.7253031565502016233030412340603***0708A60086670902ME"
    "91320016A0112233449988770708123456786304A13A"
)


def _mutate_text(text: str, edits: list[tuple[int, str, int]]) -> str:
    for at, char, mode in edits:
        at %= max(1, len(text))
        if mode == 0:
            text = text[:at] + text[at + 1 :]
        elif mode == 1:
            text = text[:at] + char + text[at:]
        else:
            text = text[:at] + char + text[at + 1 :]
    return text


text_edits = st.lists(
    st.tuples(st.integers(0, 10_000), st.characters(), st.integers(0, 2)), min_size=1, max_size=4
)


@FUZZ
@given(st.sampled_from([CPM_EXAMPLE, MPM_EXAMPLE, "2812345678901234567", ""]), text_edits)
def test_qr_parsers_raise_only_qr_errors(example: str, edits: list[tuple[int, str, int]]) -> None:
    text = _mutate_text(example, edits)
    only_ours(lambda: decode_cpm(text))
    only_ours(lambda: parse_mpm(text))
    only_ours(lambda: classify(text))
    only_ours(lambda: WalletCodeTable.default().recognise(text))


@FUZZ
@given(
    st.binary(max_size=200)
    | st.sampled_from([base64.b64decode(CPM_EXAMPLE)]).flatmap(
        lambda raw: st.integers(0, len(raw)).map(lambda n: raw[:n])
    )
)
def test_cpm_bytes_raise_only_qr_errors(raw: bytes) -> None:
    only_ours(lambda: decode_cpm_bytes(raw))


@FEW
@given(json_values)
def test_wallet_table_config_raises_only_qr_errors(entries: Any) -> None:
    only_ours(
        lambda: WalletCodeTable.from_config(entries if isinstance(entries, list) else [entries])
    )


# --- the acquirer: its (correctly signed) responses -----------------------------------------

RESPONSE_KEYS = [
    "outcome", "transaction_ref", "response_code", "reason", "auth_code", "arc", "arpc",
    "arqc_status", "status", "original_ref", "items", "offline_id", "result", "batch_id",
    "closed_at", "transaction_count", "totals", "in_balance", "terminal_id", "merchant_id",
    "host_key_id", "host_public_key", "document", "signature", "error", "kind", "amount",
]  # fmt: skip
GOOD_VALUES: dict[str, list[Any]] = {
    "outcome": ["approved", "declined", "reversed_after_lost_response", "maybe"],
    "arc": ["3030", "zz", 3030],
    "arpc": ["0102030405060708", "0"],
    "items": [[{"offline_id": "x", "result": "accepted", "transaction_ref": "r", "status": "s"}], [{}], [1]],
    "totals": [[{"brand": "visa", "currency": 978, "sales_count": 1, "sales_amount": 1,
                 "refunds_count": 0, "refunds_amount": 0, "net_amount": 1}], [{"currency": "x"}]],
    "error": [{"code": "bad", "message": "no"}, "text", None],
    "host_public_key": ["AAAA", "!!", base64.b64encode(bytes(32)).decode()],
    "closed_at": [1, "soon", None],
}  # fmt: skip
response_bodies = (
    st.dictionaries(
        st.sampled_from(RESPONSE_KEYS),
        st.one_of(
            json_values,
            st.sampled_from(sorted({json.dumps(v) for vs in GOOD_VALUES.values() for v in vs})).map(
                json.loads
            ),
        ),
        max_size=10,
    )
    | json_values
)


class FakeHost:
    """An httpx transport answering every request with one body, correctly signed."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.public = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.status = 200
        self.body = b"{}"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        seq = int(request.headers[HEADER_SEQ])
        tid = request.headers[HEADER_TERMINAL]
        message = canonical_response(terminal_id=tid, seq=seq, status=self.status, body=self.body)
        signature = base64.b64encode(self.key.sign(message)).decode()
        return httpx.Response(
            self.status, content=self.body, headers={HEADER_HOST_SIGNATURE: signature}
        )


@pytest.fixture(scope="module")
def fake_acquirer(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[FakeHost, AcquirerClient]]:
    directory = tmp_path_factory.mktemp("fuzz-terminal")
    host = FakeHost()
    ks = Keystore.create(directory, b"fuzz-device-secret-0123456789", scrypt_n=2**10)
    ks.set_enrolment(
        terminal_id="T0001", merchant_id="M1", host_public_key=host.public, host_key_id="h1"
    )
    seq = SequenceCounter(directory / "sequence.json", block=1000)
    client = AcquirerClient(
        "http://127.0.0.1:9",
        ks,
        seq,
        transport=httpx.MockTransport(host),
        sleep=lambda _s: None,
        retries=1,
        max_reversal_attempts=1,
    )
    yield host, client
    client.close()
    seq.close()


OPERATIONS: list[Callable[[AcquirerClient], object]] = [
    lambda c: c.authorise(AuthorisationRequest(amount=100, currency=978, pan="4761739001010010")),
    lambda c: c.reverse(original_idempotency_key="auth-1"),
    lambda c: c.reverse_until_acknowledged("auth-2", reason="lost_response"),
    lambda c: c.refund(RefundRequest(amount=100, currency=978, original_ref="A1")),
    lambda c: c.void("A1"),
    lambda c: c.upload_offline(
        [OfflineItem(offline_id="o1", amount=100, currency=978, pan="4761739001010010",
                     captured_at=1_700_000_000)]
    ),
    lambda c: c.status(transaction_ref="A1"),
    lambda c: c.status(idempotency_key="auth-1"),
    lambda c: c.settle(terminal_totals=[BrandTotals("visa", 978, 1, 100, 0, 0, 100)]),
    lambda c: c.whoami(),
    lambda c: c.download_parameters(),
]  # fmt: skip


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(range(len(OPERATIONS))),
    st.sampled_from([200, 201, 400, 404, 409, 422]),
    response_bodies,
)
def test_acquirer_responses_raise_only_acquirer_errors(
    fake_acquirer: tuple[FakeHost, AcquirerClient], op: int, status: int, body: Any
) -> None:
    host, client = fake_acquirer
    host.status = status
    host.body = json.dumps(body).encode()
    only_ours(lambda: OPERATIONS[op](client))


def test_fuzz_inputs_are_reproducible() -> None:
    # Guards against a strategy silently producing nothing useful.
    rng = random.Random(1)
    assert _mutate_text("abc", [(rng.randrange(3), "x", 2)]) != "abc"
