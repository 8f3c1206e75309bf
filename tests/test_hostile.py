"""Hostile devices: a card and a scanner that send what no honest device would.

The hostile card wraps a real virtual card and poisons its answers: lengths far beyond the
data, templates nested thousands deep, endless 61xx / 6Cxx, wrong status words, absurd AFLs,
oversized responses. Through the kernel each ends in a clear outcome (not an approval and not
a traceback), after a bounded number of commands and with bounded memory.

The hostile scanner types binary garbage and megabyte lines into a real pty that the
SerialScanner driver reads; each bad line is a ScanRejectedError with its reason, memory stays
bounded, and the next honest code still comes through.
"""

from __future__ import annotations

import functools
import random
import threading
import tracemalloc
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.scanner import LineFramer, ScanRejectedError, SerialScanner
from emv import tlv
from emv.kernel import ContactlessTransaction, Outcome, OutcomeKind, TerminalConfig, default_aids
from emv.tlv import Tlv
from simulator.cards import load_card
from tests.emv.test_kernel_helpers import CA_KEYS, request

if TYPE_CHECKING:
    from simulator.bridges.pty_scanner import PtyScanner

#: A kernel that sends more commands than this to one card is looping.
MAX_COMMANDS = 400
#: Peak memory allowed while the kernel deals with one hostile card.
MAX_PEAK_BYTES = 32 * 1024 * 1024

SELECT, GPO, READ_RECORD, GET_RESPONSE, GENERATE_AC = 0xA4, 0xA8, 0xB2, 0xC0, 0xAE
OK = b"\x90\x00"

Poison = Callable[[bytes, bytes], bytes]  # (command, honest answer) -> hostile answer


class HostileCard:
    """A real virtual card whose answers to commands with instruction `ins` are poisoned
    (every command when `ins` is None)."""

    def __init__(self, ins: int | None, poison: Poison, *, profile: str = "visa") -> None:
        self.card = load_card(profile)
        self.ins = ins
        self.poison = poison
        self.poisoned = 0

    def transceive(self, command: bytes) -> bytes:
        honest = self.card.transceive(command)
        if self.ins is None or command[1] == self.ins:
            self.poisoned += 1
            return self.poison(command, honest)
        return honest


def run(card: HostileCard, amount: int = 1000) -> tuple[Outcome, int]:
    """The kernel against the card, as the terminal's card loop drives it, but bounded."""
    tx = ContactlessTransaction(
        TerminalConfig(),
        default_aids(),
        request(amount),
        CA_KEYS,
    )
    step = tx.start()
    commands = 0
    while isinstance(step, bytes):
        commands += 1
        assert commands <= MAX_COMMANDS, f"kernel still sending commands after {MAX_COMMANDS}"
        step = tx.feed(card.transceive(step))
    return step, commands


def nested(tag: int, depth: int, leaf: bytes = b"\x5a\x01\x00") -> bytes:
    data = leaf
    for _ in range(depth):
        data = tlv.encode_tag(tag) + tlv.encode_length(len(data)) + data
    return data


def replace_in_template(answer: bytes, tag: int, value: bytes) -> bytes:
    """The honest answer with data object `tag` (in its response template) set to `value`."""
    body, sw = answer[:-2], answer[-2:]
    template = tlv.decode_one(body)
    children = [c for c in template.children if c.tag != tag] + [Tlv.primitive(tag, value)]
    return Tlv.template(template.tag, children).encode() + sw


def _random_sw(seed: int) -> Poison:
    rng = random.Random(seed)
    return lambda _c, _a: (
        bytes([rng.choice([0x62, 0x63, 0x64, 0x65, 0x67, 0x69, 0x6A, 0x6F])])
        + bytes([rng.randrange(256)])
    )


def _fci_with_pdol(pdol: bytes) -> Poison:
    """The application's SELECT answer, with this PDOL (the PPSE answer stays honest)."""

    def poison(command: bytes, honest: bytes) -> bytes:
        if b"2PAY" in command:
            return honest
        fci = Tlv.template(
            0x6F,
            [
                Tlv.primitive(0x84, command[5 : 5 + command[4]]),
                Tlv.template(0xA5, [Tlv.primitive(0x50, b"VISA"), Tlv.primitive(0x9F38, pdol)]),
            ],
        )
        return fci.encode() + OK

    return poison


HOSTILE: dict[str, tuple[int | None, Poison]] = {
    # Oversized lengths: a length field far beyond the data that follows.
    "ppse length 4 GB": (SELECT, lambda _c, _a: b"\x6f\x84\xff\xff\xff\xff" + bytes(16) + OK),
    "fci length beyond data": (SELECT, lambda _c, a: a[:2] + b"\x82\xff\xff" + a[2:]),
    "gpo length beyond data": (GPO, lambda _c, a: b"\x77\x83\xff\xff\xff" + a[2:]),
    "record length beyond data": (READ_RECORD, lambda _c, a: b"\x70\x82\x7f\xff" + a[2:]),
    "length of length 127": (SELECT, lambda _c, _a: b"\x6f\xff" + bytes(8) + OK),
    "pdol asking for 2 GB": (SELECT, _fci_with_pdol(bytes.fromhex("9F0284847FFFFF"))),
    "pdol asking for 64 x 255 bytes": (SELECT, _fci_with_pdol(bytes.fromhex("9F0281FF") * 64)),
    # Deep nesting: constructed templates inside each other thousands of times.
    "ppse nested 5000 deep": (SELECT, lambda _c, _a: nested(0xA5, 5000) + OK),
    "gpo nested 3000 deep": (GPO, lambda _c, _a: nested(0x77, 3000) + OK),
    "record nested 3000 deep": (READ_RECORD, lambda _c, _a: nested(0x70, 3000) + OK),
    # Endless 61xx (more data: GET RESPONSE) and 6Cxx (wrong Le: resend).
    "endless 61xx": (None, lambda _c, _a: b"\x61\x10"),
    "endless 6Cxx": (None, lambda _c, _a: b"\x6c\x10"),
    "61xx on gpo then endless": (GPO, lambda _c, _a: b"\x61\xff"),
    # Wrong status words.
    "select 6A82 (not found)": (SELECT, lambda _c, _a: b"\x6a\x82"),
    "gpo 6985 (conditions)": (GPO, lambda _c, _a: b"\x69\x85"),
    "record 6A83 (no record)": (READ_RECORD, lambda _c, _a: b"\x6a\x83"),
    "gpo 9000 with no data": (GPO, lambda _c, _a: OK),
    "status word only 1 byte": (None, lambda _c, _a: b"\x90"),
    "empty answer": (GPO, lambda _c, _a: b""),
    "random warnings and errors": (None, _random_sw(7)),
    "answer data with 6300": (GPO, lambda _c, a: a[:-2] + b"\x63\x00"),
    # Absurd AFLs (EMV Book 3 §10.2: SFI 1..30, first record >= 1, last >= first).
    "afl every record of sfi 1": (GPO, lambda _c, a: replace_in_template(a, 0x94, b"\x08\x01\xff\x00")),
    "afl 63 entries of 255 records": (GPO, lambda _c, a: replace_in_template(a, 0x94, b"\x08\x01\xff\x00" * 63)),
    "afl first record 0": (GPO, lambda _c, a: replace_in_template(a, 0x94, b"\x08\x00\x02\x00")),
    "afl last before first": (GPO, lambda _c, a: replace_in_template(a, 0x94, b"\x08\x05\x01\x00")),
    "afl sfi 0": (GPO, lambda _c, a: replace_in_template(a, 0x94, b"\x00\x01\x01\x00")),
    "afl sfi 31": (GPO, lambda _c, a: replace_in_template(a, 0x94, b"\xf8\x01\x01\x00")),
    "afl not a multiple of 4": (GPO, lambda _c, a: replace_in_template(a, 0x94, b"\x08\x01\x01")),
    "afl oda count beyond range": (GPO, lambda _c, a: replace_in_template(a, 0x94, b"\x08\x01\x01\x09")),
    # Oversized answers.
    "64 KiB of garbage": (READ_RECORD, lambda _c, _a: random.Random(3).randbytes(65536) + OK),
    "1 MiB record": (READ_RECORD, lambda _c, a: b"\x70\x83\x10\x00\x00" + b"\x5f\x20\x83\x0f\xff\xfb" + bytes(0xFFFFB) + OK),
}  # fmt: skip


class EveryRecordCard(HostileCard):
    """An AFL naming 63 x 255 records, and a card that answers every READ RECORD (with its
    first record): without a bound the kernel would send 16,000 commands for one tap."""

    def __init__(self) -> None:
        super().__init__(None, lambda _c, a: a)
        self.record = b""

    def transceive(self, command: bytes) -> bytes:
        honest = self.card.transceive(command)
        if command[1] == GPO:
            self.poisoned += 1
            return replace_in_template(honest, 0x94, bytes.fromhex("08 01 FF 00 10 01 FF 00"))
        if command[1] == READ_RECORD:
            self.record = self.record or honest
            return self.record
        return honest


def test_afl_naming_thousands_of_records_is_refused_before_reading_them() -> None:
    card = EveryRecordCard()
    outcome, commands = run(card)
    assert outcome.kind is OutcomeKind.END_APPLICATION
    assert "AFL names 510 records" in outcome.detail
    assert commands == 3  # SELECT PPSE, SELECT AID, GPO: not one READ RECORD


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_card_gets_a_clear_outcome_in_bounded_commands_and_memory(case: str) -> None:
    ins, poison = HOSTILE[case]
    card = HostileCard(ins, poison)
    tracemalloc.start()
    try:
        outcome, commands = run(card)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert card.poisoned >= 1, "the hostile answer was never sent"
    assert isinstance(outcome, Outcome)
    assert outcome.kind not in (OutcomeKind.APPROVED, OutcomeKind.ONLINE_REQUEST), (
        f"{case}: a hostile card must not get a payment through ({outcome})"
    )
    assert outcome.reason or outcome.detail, "the outcome says why"
    assert commands <= MAX_COMMANDS
    assert peak < MAX_PEAK_BYTES, f"{case}: peak memory {peak:,} bytes"


def test_generate_ac_may_not_replace_the_account_data_the_kernel_checked() -> None:
    """A Kernel 2 card whose GENERATE AC answer ('77') carries another card's PAN: the
    account data was checked after the records, so a later different value is a card
    fault (Book 3 §10.2), never the number that goes to the acquirer."""
    other_pan = bytes.fromhex("5413330089010434")

    def poison(_c: bytes, honest: bytes) -> bytes:
        return replace_in_template(honest, 0x5A, other_pan)

    outcome, _ = run(HostileCard(GENERATE_AC, poison, profile="mastercard"))
    assert outcome.kind is OutcomeKind.END_APPLICATION
    assert "GENERATE AC gives data object 5A again with another value" in outcome.detail
    assert outcome.card_data.get(0x5A) != other_pan


@functools.cache
def honest_commands(profile: str) -> tuple[int, ...]:
    """The instruction byte of every command an honest tap of `profile` gets, in order."""
    sent: list[int] = []

    def record(command: bytes, honest: bytes) -> bytes:
        sent.append(command[1])
        return honest

    outcome, _ = run(HostileCard(None, record, profile=profile))
    assert outcome.kind in (OutcomeKind.APPROVED, OutcomeKind.ONLINE_REQUEST), outcome
    return tuple(sent)


@settings(max_examples=200, deadline=None)
@given(st.data(), st.binary(max_size=300))
def test_card_answering_anything_gets_a_clear_outcome(data: st.DataObject, junk: bytes) -> None:
    # One command of an honest tap (the nth with instruction `ins`, or the nth of all when
    # `ins` is None) gets the junk, every other the honest answer. Only commands the tap
    # really sends are drawn, so the junk reaches the kernel in every combination.
    profile = data.draw(st.sampled_from(["visa", "mastercard"]), label="profile")
    commands = honest_commands(profile)
    ins = data.draw(st.sampled_from([None, *sorted(set(commands))]), label="ins")
    count = len(commands) if ins is None else commands.count(ins)
    nth = data.draw(st.integers(0, count - 1), label="nth")
    calls = {"n": 0, "junk_sent": 0}

    def poison(_c: bytes, honest: bytes) -> bytes:
        calls["n"] += 1
        if calls["n"] == nth + 1:
            calls["junk_sent"] += 1
            return junk
        return honest

    outcome, sent = run(HostileCard(ins, poison, profile=profile))
    assert calls["junk_sent"] == 1, f"the junk never reached the kernel ({calls['n']} calls)"
    assert isinstance(outcome, Outcome)
    assert sent <= MAX_COMMANDS
    if outcome.kind not in (OutcomeKind.APPROVED, OutcomeKind.ONLINE_REQUEST):
        assert outcome.reason or outcome.detail, f"{outcome} does not say why"


# --- the hostile scanner ---------------------------------------------------------------------

MIB = 1024 * 1024


def test_hostile_scanner_garbage_and_megabyte_lines_through_a_pty(
    pty_scanner: PtyScanner,
) -> None:
    rng = random.Random(11)
    garbage = bytes(b for b in rng.randbytes(512 * 1024) if b not in b"\r\n")
    chunks = [
        garbage + b"\r",  # binary garbage
        b"A" * MIB + b"\r",  # megabyte lines
        b"\xff\xfe" * (MIB // 2) + b"\n",
        rng.randbytes(64 * 1024).replace(b"\r", b"").replace(b"\n", b"") + b"\r",
        b"\x00\x01\x02 NUL bytes \x07\r",
        b"\xc3\x28 bad utf-8\r",
        b"\r\n\r\n\r\n",  # blank lines are nothing, not codes
        "hello 最佳 ok".encode() + b"\r",  # an honest code after all that
    ]
    done = threading.Event()

    def type_all() -> None:
        for chunk in chunks:
            pty_scanner.write(chunk)
        done.set()

    scanner = SerialScanner(f"serial:{pty_scanner.path}?suffix=ANY&max=4096&partial=30")
    writer = threading.Thread(target=type_all, daemon=True)
    rejected: list[str] = []
    tracemalloc.start()
    try:
        writer.start()
        while True:
            try:
                code = scanner.wait_for_code(timeout=60)
                break
            except ScanRejectedError as exc:
                rejected.append(str(exc))
            assert scanner.framer.pending <= 4096
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        scanner.close()
        writer.join(timeout=30)
    assert code == "hello 最佳 ok"
    assert len(rejected) == 6
    assert sum("too long" in r for r in rejected) == 4
    assert any("control character" in r for r in rejected)
    assert any("not UTF-8" in r for r in rejected)
    # Megabytes went through; the driver never held more than a few read slices of them.
    assert peak < 4 * MIB, f"peak memory {peak:,} bytes"
    assert done.is_set()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.binary(max_size=600)
        | st.sampled_from([b"\r", b"\n", b"\r\n", b"\x02", b"\x03", b"]Q1", "é".encode()]),
        max_size=40,
    ),
    st.sampled_from(["ANY", "CR", "LF", "CRLF", "NONE"]),
)
def test_line_framer_takes_any_bytes(chunks: list[bytes], suffix: str) -> None:
    framer = LineFramer(suffix=suffix, max_length=256)
    out: list[str | ScanRejectedError] = []
    for chunk in chunks:
        out += framer.feed(chunk)
        assert len(framer._buffer) <= 256  # a runaway line is counted, never stored
    out += framer.flush()
    for item in out:
        if isinstance(item, str):
            assert item
            assert len(item.encode()) <= 256
            assert all(ord(ch) >= 0x20 or ch in "\t\x1d\x1e\x04" for ch in item)
        else:
            assert isinstance(item, ScanRejectedError)
            assert str(item)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_honest_answer_with_flipped_bytes_gets_an_outcome_never_an_exception(
    data: st.DataObject,
) -> None:
    """Near-valid answers reach deeper than junk: one honest answer with a few bytes changed
    (a flipped length, an emptied AIP, a truncated certificate). The kernel catches only card
    faults (EmvError), so a bug in it would surface here as an exception."""
    profile = data.draw(st.sampled_from(["visa", "mastercard", "visa_debit", "maestro"]))
    commands = honest_commands(profile)
    nth = data.draw(st.integers(0, len(commands) - 1), label="nth command")
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
        label="flips",
    )
    calls = {"n": 0}

    def poison(_c: bytes, honest: bytes) -> bytes:
        calls["n"] += 1
        if calls["n"] != nth + 1 or len(honest) <= 2:
            return honest
        body = bytearray(honest[:-2])
        for position, value in flips:
            body[position % len(body)] = value
        return bytes(body) + honest[-2:]

    outcome, sent = run(HostileCard(None, poison, profile=profile))
    assert isinstance(outcome, Outcome)
    assert sent <= MAX_COMMANDS
