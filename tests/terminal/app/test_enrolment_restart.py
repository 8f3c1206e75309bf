"""A terminal killed after the host committed its enrolment and before its keystore saved the
answer starts again: the code that was in flight is kept on disk and used first, and the
host answers the same enrolment (found by the crash-at-every-commit-point harness)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from terminal.acquirer.client import AcquirerClient, HostRejectedError
from terminal.app.runtime import ENROLMENT_CODE_FILE, _enrol


class _Host:
    """The host's side of enrolment: a code once used answers only the key that used it."""

    def __init__(self) -> None:
        self.used: set[str] = set()
        self.calls: list[str] = []
        self.crash_before_saving = False

    def enrol(self, code: str) -> None:
        self.calls.append(code)
        if code in self.used:
            return  # the same key, the same code: the same enrolment
        if self.used:
            raise HostRejectedError(409, "key_already_enrolled", "this key is enrolled")
        if not code.startswith("ok-"):
            raise HostRejectedError(403, "activation_code_invalid", "not known")
        self.used.add(code)
        if self.crash_before_saving:
            raise KeyboardInterrupt("killed before the keystore saved the answer")


def _client(host: _Host) -> AcquirerClient:
    return cast(AcquirerClient, host)


def test_a_start_cut_short_after_the_host_enrolled_retries_with_the_same_code(
    tmp_path: Path,
) -> None:
    host = _Host()
    host.crash_before_saving = True
    codes = iter(["ok-1", "ok-2"])
    with pytest.raises(KeyboardInterrupt):
        _enrol(_client(host), tmp_path, lambda: next(codes))
    assert (tmp_path / ENROLMENT_CODE_FILE).read_text() == "ok-1"
    host.crash_before_saving = False
    _enrol(_client(host), tmp_path, lambda: next(codes))  # a new code would be refused
    assert host.calls == ["ok-1", "ok-1"]
    assert not (tmp_path / ENROLMENT_CODE_FILE).exists()


def test_a_kept_code_the_host_refuses_gives_way_to_the_code_given_now(tmp_path: Path) -> None:
    (tmp_path / ENROLMENT_CODE_FILE).write_text("stale")
    host = _Host()
    _enrol(_client(host), tmp_path, "ok-new")
    assert host.calls == ["stale", "ok-new"]
    assert not (tmp_path / ENROLMENT_CODE_FILE).exists()


def test_a_refused_code_is_the_technician_s_error_and_is_not_kept(tmp_path: Path) -> None:
    host = _Host()
    with pytest.raises(HostRejectedError, match="not known"):
        _enrol(_client(host), tmp_path, "typo")
    assert not (tmp_path / ENROLMENT_CODE_FILE).exists()
    _enrol(_client(host), tmp_path, "ok-fixed")
    assert host.calls == ["typo", "ok-fixed"]
