"""The one lock-out policy and its authenticated, persisted book."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from terminal.security.lockout import (
    DEFAULT_POLICY,
    LockoutBook,
    LockoutError,
    LockoutPolicy,
    ScopeState,
)

KEY = b"k" * 32


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _book(path: Path, clock: Clock, key: bytes = KEY, purpose: str = "merchant-pin") -> LockoutBook:
    return LockoutBook(path, key, purpose=purpose, clock=clock)


def _fresh(path: Path, clock: Clock) -> LockoutBook:
    book = _book(path, clock)
    with book.session() as s:
        s.reset()
    return book


def test_the_policy_3_free_then_30_s_doubling_to_an_hour() -> None:
    p = DEFAULT_POLICY
    assert [p.lockout_for(n) for n in range(1, 12)] == [
        0, 0, 30, 60, 120, 240, 480, 960, 1920, 3600, 3600,
    ]  # fmt: skip
    assert p.saturation == 10
    assert p.lockout_for(10**9) == 3600  # no huge integers from a huge count
    with pytest.raises(ValueError, match="free_failures"):
        LockoutPolicy(free_failures=0)


def test_failures_persist_across_book_objects_and_a_right_entry_resets(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "book.json"
    _fresh(path, clock)
    for expected in (0, 0, 30):
        with _book(path, clock).session() as s:
            assert s.fail("register-1").retry_after(s.now, s.policy) == expected
    with _book(path, clock).session() as s:  # a new process: still locked
        assert s.retry_after("register-1") == 30
        assert s.retry_after("checkout-page") == 0  # another caller is not
    clock.now += 30
    with _book(path, clock).session() as s:
        assert s.retry_after("register-1") == 0
        s.succeed("register-1")
    with _book(path, clock).session() as s:
        assert s.state("register-1") == ScopeState()
        assert s.scopes() == {}


@pytest.mark.parametrize("damage", ["delete", "garbage", "edit", "other_key", "other_purpose"])
def test_a_missing_or_altered_book_fails_closed_once(tmp_path: Path, damage: str) -> None:
    clock = Clock()
    path = tmp_path / "book.json"
    book = _fresh(path, clock)
    with book.session() as s:
        s.fail("register-1")
        s.fail("register-1")
    if damage == "delete":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"\x00not json")
    elif damage == "edit":
        doc = json.loads(path.read_text())
        doc["scopes"] = {}  # what a thief resetting the count would write
        path.write_text(json.dumps(doc))
    elif damage == "other_key":  # a fresh book from another terminal, copied over
        other = LockoutBook(path, b"x" * 32, purpose="merchant-pin", clock=clock)
        with other.session() as s:
            s.reset()
    else:
        with _book(path, clock, purpose="technician").session() as s:
            s.reset()
        path.write_bytes(path.read_bytes().replace(b'"technician"', b'"merchant-pin"'))
    with book.session() as s:
        assert s.tampered
        # Every caller, even one never seen, is locked for the longest lock-out...
        assert s.retry_after("register-1") == 3600
        assert s.retry_after("someone-else") == 3600
    clock.now += 10
    with book.session() as s:
        # ...noticed once: the deadline does not move on with every look.
        assert s.tampered is None
        assert s.retry_after("register-1") == 3590
    clock.now += 3590
    with book.session() as s:
        assert s.retry_after("register-1") == 0
        # and a wrong entry after it costs the longest lock-out again, not 3 free tries
        assert s.fail("register-1").retry_after(s.now, s.policy) == 3600
        s.succeed("checkout-page")  # a right entry clears that caller only
        assert s.state("checkout-page") == ScopeState()
        assert s.state("someone-else").failures == DEFAULT_POLICY.saturation


def test_a_clock_set_back_never_locks_longer_than_the_longest_lock_out(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "book.json"
    book = _fresh(path, clock)
    with book.session() as s:
        for _ in range(3):
            s.fail("register-1")
    clock.now -= 10 * 365 * 86400
    with book.session() as s:
        assert s.retry_after("register-1") == 3600


def test_parallel_entries_are_counted_one_after_the_other(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "book.json"
    _fresh(path, clock)
    allowed: list[int] = []

    def guess() -> None:
        with _book(path, clock).session() as s:
            if s.retry_after("page") == 0:
                allowed.append(1)
                s.fail("page")

    threads = [threading.Thread(target=guess) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(allowed) == 3  # not 20: each guess saw the count the one before wrote
    with _book(path, clock).session() as s:
        assert s.state("page").failures == 3


def test_the_book_holds_no_key_and_is_private(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "book.json"
    _fresh(path, clock)
    assert path.stat().st_mode & 0o077 == 0
    assert KEY not in path.read_bytes()
    with pytest.raises(LockoutError, match="scope"), _book(path, clock).session() as s:
        s.fail("bad\nscope")
