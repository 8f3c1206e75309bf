"""The paired registers and their pairing codes (terminal.store.registers): a code's life,
its single use, its tries across every caller, what reaches the disk; tokens, last seen,
revocation and names paired again. The clock and the randomness are the test's."""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from terminal.store.registers import (
    CODE_LIFETIME,
    CODE_TRIES,
    FILE,
    SEEN_EVERY,
    CodeRefused,
    NameTaken,
    Paired,
    RefusalReason,
    RegisterNameError,
    RegisterStore,
    check_register_name,
    normalise_code,
    show_code,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Randomness:
    """Counting bytes: each call's bytes differ, so codes and tokens are known in advance."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def __call__(self, n: int) -> bytes:
        return next(self._counter).to_bytes(n, "big")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[RegisterStore]:
    s = RegisterStore(tmp_path / FILE, clock=clock)
    yield s
    s.close()


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def _paired(outcome: object) -> Paired:
    assert isinstance(outcome, Paired), outcome
    return outcome


def test_a_code_pairs_one_register_once(store: RegisterStore) -> None:
    issued = store.issue_code()
    assert len(issued.code) == 6
    assert issued.code.isdigit()
    paired = _paired(store.pair(issued.code, "till-2"))
    assert paired.register.name == "till-2"
    assert store.authenticate(paired.token) is not None
    # Spent: the same code pairs no second register.
    assert store.pair(issued.code, "till-3") == CodeRefused(RefusalReason.NONE)


def test_a_code_expires_after_five_minutes(store: RegisterStore, clock: Clock) -> None:
    issued = store.issue_code()
    assert issued.expires_at == clock.now + CODE_LIFETIME
    clock.now += CODE_LIFETIME
    assert store.pair(issued.code, "till-2") == CodeRefused(RefusalReason.EXPIRED)


def test_a_code_just_before_it_expires_pairs(store: RegisterStore, clock: Clock) -> None:
    issued = store.issue_code()
    clock.now += CODE_LIFETIME - 1
    _paired(store.pair(issued.code, "till-2"))


def test_no_code_issued_is_refused_as_none(store: RegisterStore) -> None:
    assert store.pair("123456", "till-2") == CodeRefused(RefusalReason.NONE)


def test_five_wrong_tries_in_all_burn_the_code(store: RegisterStore) -> None:
    issued = store.issue_code()
    wrong = _wrong(issued.code)
    # Tries from any caller count together: the store knows no caller.
    for left in range(CODE_TRIES - 1, 0, -1):
        assert store.pair(wrong, "till-2") == CodeRefused(RefusalReason.WRONG, left)
    assert store.pair(wrong, "till-2") == CodeRefused(RefusalReason.WRONG, 0)
    # Burned: the right code no longer pairs.
    assert store.pair(issued.code, "till-2") == CodeRefused(RefusalReason.NONE)


def test_wrong_tries_under_five_leave_the_code_valid(store: RegisterStore) -> None:
    issued = store.issue_code()
    for _ in range(CODE_TRIES - 1):
        store.pair(_wrong(issued.code), "till-2")
    _paired(store.pair(issued.code, "till-2"))


def test_a_new_code_replaces_the_one_before(store: RegisterStore) -> None:
    first = store.issue_code()
    second = store.issue_code()
    assert first.code != second.code
    assert store.pair(first.code, "till-2") == CodeRefused(RefusalReason.WRONG, CODE_TRIES - 1)
    _paired(store.pair(second.code, "till-2"))


def test_codes_and_tokens_come_from_the_injected_randomness(tmp_path: Path, clock: Clock) -> None:
    one = RegisterStore(tmp_path / "a" / FILE, clock=clock, random_bytes=Randomness())
    two = RegisterStore(tmp_path / "b" / FILE, clock=clock, random_bytes=Randomness())
    try:
        assert one.issue_code() == two.issue_code()
        first = _paired(one.pair(one.issue_code().code, "till-2"))
        second = _paired(two.pair(two.issue_code().code, "till-2"))
        assert first.token == second.token
    finally:
        one.close()
        two.close()


def test_only_hashes_reach_the_disk(tmp_path: Path, store: RegisterStore) -> None:
    issued = store.issue_code()
    token = _paired(store.pair(issued.code, "till-2")).token
    second = store.issue_code()  # a live code on disk too
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(FILE))
    assert token.encode() not in raw
    assert second.code.encode() not in raw
    with sqlite3.connect(tmp_path / FILE) as conn:
        hashes = {row[0] for row in conn.execute("SELECT token_hash FROM registers")}
        codes = [row[0] for row in conn.execute("SELECT code_hash FROM codes")]
    assert hashes == {hashlib.sha256(token.encode()).hexdigest()}
    assert second.code not in codes
    assert issued.code not in codes
    assert (tmp_path / FILE).stat().st_mode & 0o077 == 0


def test_a_token_is_32_random_bytes_urlsafe(store: RegisterStore) -> None:
    token = _paired(store.pair(store.issue_code().code, "till-2")).token
    assert len(token) == 43
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert store.authenticate("not-a-token") is None


def test_last_seen_is_written_at_most_once_a_minute(store: RegisterStore, clock: Clock) -> None:
    token = _paired(store.pair(store.issue_code().code, "till-2")).token
    start = clock.now
    store.authenticate(token)
    clock.now += SEEN_EVERY - 1
    store.authenticate(token)
    assert store.registers()[0].last_seen_at == start
    clock.now += 1
    store.authenticate(token)
    assert store.registers()[0].last_seen_at == start + SEEN_EVERY


def test_revoked_token_is_known_as_revoked_and_the_name_may_pair_again(
    store: RegisterStore, clock: Clock
) -> None:
    old = _paired(store.pair(store.issue_code().code, "till-2")).token
    clock.now += 10
    revoked = store.revoke("TILL-2")  # any case
    assert revoked is not None
    assert revoked.revoked_at == clock.now
    seen = store.authenticate(old)
    assert seen is not None
    assert seen.revoked
    assert seen.name == "till-2"
    assert store.revoke("till-2") is None  # nothing left to revoke
    new = _paired(store.pair(store.issue_code().code, "till-2")).token
    fresh = store.authenticate(new)
    assert fresh is not None
    assert not fresh.revoked
    assert [r.revoked for r in store.registers()] == [True, False]
    still = store.authenticate(old)
    assert still is not None
    assert still.revoked


def test_a_name_taken_keeps_the_code(store: RegisterStore) -> None:
    _paired(store.pair(store.issue_code().code, "till-2"))
    issued = store.issue_code()
    assert store.pair(issued.code, "Till-2") == NameTaken("till-2")
    _paired(store.pair(issued.code, "till-3"))


def test_a_second_store_on_the_same_file_sees_codes_and_revocations(
    tmp_path: Path, clock: Clock
) -> None:
    terminal = RegisterStore(tmp_path / FILE, clock=clock)
    technician = RegisterStore(tmp_path / FILE, clock=clock)
    try:
        token = _paired(terminal.pair(technician.issue_code().code, "till-2")).token
        technician.revoke("till-2")
        seen = terminal.authenticate(token)
        assert seen is not None
        assert seen.revoked
    finally:
        terminal.close()
        technician.close()


@pytest.mark.parametrize("name", ["", " till", "till ", "a" * 33, "till/2", "kassé", "t\n"])
def test_bad_names_are_refused(store: RegisterStore, name: str) -> None:
    with pytest.raises(RegisterNameError):
        check_register_name(name)
    with pytest.raises(RegisterNameError):
        store.pair("123456", name)


def test_codes_as_typed() -> None:
    assert normalise_code("123 456") == "123456"
    assert normalise_code(" 123456 ") == "123456"
    assert normalise_code("12345") is None
    assert normalise_code("12345a") is None
    assert normalise_code("１２３４５６") is None  # full-width digits are not typed codes
    assert show_code("123456") == "123 456"
