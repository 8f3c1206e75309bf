"""The kiosk page's credential (terminal.api.kiosk) and the Host allow-list's parsing, in
process: one-time codes that expire, are spent by one use and live in a 0600 file; page
sessions kept as digests that survive a restart and end when unused for hours or a day
after they were earned; the names a Host header may carry."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest

from terminal.api.kiosk import (
    CODE_FILE,
    MAX_SESSIONS,
    SESSION_IDLE,
    SESSION_MAX_AGE,
    KioskCodes,
    kiosk_url,
    read_kiosk_code,
)
from terminal.api.server import _host_name, allowed_host_names
from terminal.domain.errors import ConfigurationError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _tokens() -> Iterator[str]:
    return (f"tok{n:04d}" for n in count())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def wall() -> Clock:
    c = Clock()
    c.now = 1_800_000_000.0
    return c


@pytest.fixture
def codes(tmp_path: Path, clock: Clock, wall: Clock) -> Iterator[KioskCodes]:
    tokens = _tokens()
    kiosk = KioskCodes(
        tmp_path / CODE_FILE, clock=clock, wall_clock=wall, token=lambda: next(tokens), ttl=60
    )
    try:
        yield kiosk
    finally:
        kiosk.close()


def test_code_file_is_private_whatever_the_umask(codes: KioskCodes) -> None:
    old = os.umask(0)
    try:
        code = codes.issue()
    finally:
        os.umask(old)
    assert codes.code_path.stat().st_mode & 0o777 == 0o600
    assert read_kiosk_code(codes.code_path) == code


def test_a_code_works_once_and_a_new_one_replaces_it(codes: KioskCodes) -> None:
    first = codes.issue()
    session = codes.redeem(first)
    assert session is not None
    assert codes.session_valid(session)
    assert codes.redeem(first) is None  # spent
    second = read_kiosk_code(codes.code_path)
    assert second != first
    assert codes.redeem(second) is not None


def test_a_wrong_code_is_refused_and_does_not_spend_the_right_one(codes: KioskCodes) -> None:
    code = codes.issue()
    assert codes.redeem("guess") is None
    assert codes.redeem("") is None
    assert read_kiosk_code(codes.code_path) == code
    assert codes.redeem(code) is not None


def test_an_expired_code_is_refused_and_replaced(codes: KioskCodes, clock: Clock) -> None:
    code = codes.issue()
    clock.now += 61
    assert codes.redeem(code) is None
    fresh = read_kiosk_code(codes.code_path)
    assert fresh != code
    assert codes.redeem(fresh) is not None


def test_refresh_replaces_only_an_expired_code(codes: KioskCodes, clock: Clock) -> None:
    code = codes.issue()
    assert codes.refresh() is False
    assert read_kiosk_code(codes.code_path) == code
    clock.now += 60
    assert codes.refresh() is True
    assert read_kiosk_code(codes.code_path) != code


def test_sessions_survive_a_restart_as_digests_only(tmp_path: Path, clock: Clock) -> None:
    tokens = _tokens()
    first = KioskCodes(tmp_path / CODE_FILE, clock=clock, token=lambda: next(tokens))
    session = first.redeem(first.issue())
    assert session is not None
    first.close()
    assert not (tmp_path / CODE_FILE).exists()  # a stopped terminal leaves no code behind
    stored = (tmp_path / "kiosk-sessions").read_text()
    assert session not in stored
    assert (tmp_path / "kiosk-sessions").stat().st_mode & 0o777 == 0o600
    again = KioskCodes(tmp_path / CODE_FILE, clock=clock, token=lambda: next(tokens))
    assert again.session_valid(session)
    assert not again.session_valid(session + "x")
    again.close()


def test_only_the_newest_sessions_are_kept(codes: KioskCodes) -> None:
    sessions = []
    for _ in range(MAX_SESSIONS + 2):
        session = codes.redeem(codes.issue())
        assert session is not None
        sessions.append(session)
    assert [codes.session_valid(s) for s in sessions] == [False] * 2 + [True] * MAX_SESSIONS


def _earn(codes: KioskCodes) -> str:
    session = codes.redeem(codes.issue())
    assert session is not None
    return session


def test_a_session_ends_when_unused_for_its_idle_time(codes: KioskCodes, wall: Clock) -> None:
    session = _earn(codes)
    wall.now += SESSION_IDLE - 1  # used just in time: it goes on, for as long again
    assert codes.session_valid(session)
    wall.now += SESSION_IDLE - 1
    assert codes.session_valid(session)
    wall.now += SESSION_IDLE  # 24 h minus 2 s old, unused for its idle time: ended
    assert wall.now < 1_800_000_000.0 + SESSION_MAX_AGE  # not yet a day old
    assert not codes.session_valid(session)
    wall.now -= SESSION_IDLE  # ended is ended, whatever the clock says next
    assert not codes.session_valid(session)


def test_a_session_ends_a_day_after_it_was_earned_however_used(
    codes: KioskCodes, wall: Clock
) -> None:
    session = _earn(codes)
    earned = wall.now
    while wall.now < earned + SESSION_MAX_AGE - 600:
        wall.now += 600
        assert codes.session_valid(session)
    wall.now = earned + SESSION_MAX_AGE
    assert not codes.session_valid(session)
    assert _earn(codes) != session  # the kiosk earns a new one with the next code
    # The ended one is gone from the file too: only the new one is kept.
    assert len(json.loads(codes.sessions_path.read_text())["sessions"]) == 1


def test_a_session_from_ahead_of_the_clock_is_dropped(codes: KioskCodes, wall: Clock) -> None:
    session = _earn(codes)
    wall.now -= 3600  # the clock was set back an hour: the session's times are not trusted
    assert not codes.session_valid(session)
    wall.now += 3600
    assert not codes.session_valid(session)


def test_limits_hold_across_a_restart(tmp_path: Path, clock: Clock, wall: Clock) -> None:
    tokens = _tokens()

    def start() -> KioskCodes:
        return KioskCodes(
            tmp_path / CODE_FILE, clock=clock, wall_clock=wall, token=lambda: next(tokens)
        )

    first = start()
    session = _earn(first)
    earned = wall.now
    first.close()
    wall.now = earned + SESSION_MAX_AGE - 60
    restarted = start()
    wall.now = earned + SESSION_MAX_AGE
    assert not restarted.session_valid(session)  # the age counts from when it was earned
    restarted.close()
    # The last use is written, at least every quarter of an hour of use: after a restart the
    # idle time counts from about then, not from when the session was earned.
    second = start()
    session = _earn(second)
    for _ in range(4):
        wall.now += 1800
        assert second.session_valid(session)
    last_use = wall.now
    second.close()
    wall.now = last_use + SESSION_IDLE - 60
    again = start()
    assert again.session_valid(session)
    again.close()


def test_sessions_are_not_written_at_every_use(codes: KioskCodes, wall: Clock) -> None:
    session = _earn(codes)
    written = codes.sessions_path.stat().st_mtime_ns
    os.utime(codes.sessions_path, ns=(1, 1))
    for _ in range(20):
        wall.now += 10
        assert codes.session_valid(session)
    assert codes.sessions_path.stat().st_mtime_ns == 1
    assert written != 1


def test_sessions_of_the_first_format_are_dropped(tmp_path: Path, wall: Clock) -> None:
    # Version 1 kept bare digests, no times: such a session could never end, so none is kept
    # (the kiosk opens with a new code once).
    import hashlib

    sessions = tmp_path / "kiosk-sessions"
    sessions.write_text(json.dumps([hashlib.sha256(b"old-session").hexdigest()]))
    os.chmod(sessions, 0o600)
    kiosk = KioskCodes(tmp_path / CODE_FILE, wall_clock=wall)
    assert not kiosk.session_valid("old-session")
    kiosk.close()


def test_a_code_file_others_can_read_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / CODE_FILE
    path.write_text("abc\n")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigurationError, match="readable by group or others"):
        read_kiosk_code(path)
    with pytest.raises(ConfigurationError, match="no such file"):
        read_kiosk_code(tmp_path / "missing")
    os.chmod(path, 0o600)
    path.write_text("not a code; rm -rf\n")
    with pytest.raises(ConfigurationError, match="not a kiosk code"):
        read_kiosk_code(path)


def test_a_damaged_sessions_file_says_what_to_do(tmp_path: Path) -> None:
    sessions = tmp_path / "kiosk-sessions"
    sessions.write_text("{not json")
    os.chmod(sessions, 0o600)
    with pytest.raises(ConfigurationError, match="delete it"):
        KioskCodes(tmp_path / CODE_FILE)


def test_the_background_refresh_replaces_an_expired_code(tmp_path: Path, clock: Clock) -> None:
    kiosk = KioskCodes(tmp_path / CODE_FILE, clock=clock, ttl=60)
    try:
        code = kiosk.start(interval=0.01)
        clock.now += 61
        for _ in range(500):
            if read_kiosk_code(kiosk.code_path) != code:
                break
            time.sleep(0.01)
        assert read_kiosk_code(kiosk.code_path) != code
    finally:
        kiosk.close()


def test_kiosk_url() -> None:
    assert kiosk_url("http://127.0.0.1:8700/", "abc") == "http://127.0.0.1:8700/kiosk?code=abc"


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8700", "127.0.0.1"),
        ("LOCALHOST", "localhost"),
        ("[::1]:8700", "::1"),
        ("[::1]", "::1"),
        ("evil.example:8700", "evil.example"),
        ("127.0.0.1:80:80", ""),
        ("127.0.0.1:port", ""),
        ("[::1]x", ""),
        ("[::1", ""),
        ("::1", ""),  # IPv6 in Host needs brackets
    ],
)
def test_host_header_name(header: str, name: str) -> None:
    assert _host_name(header) == name


def test_allowed_host_names_are_checked() -> None:
    assert allowed_host_names(["Terminal-1.Shop.LAN", "192.168.1.20", "[fe80::1]"]) == {
        "terminal-1.shop.lan",
        "192.168.1.20",
        "fe80::1",
    }
    for bad in ["", "*", "*.shop.lan", "host:8700", "a..b", "ex ample", "bücher.example"]:
        with pytest.raises(ConfigurationError, match="allowed host"):
            allowed_host_names([bad])
