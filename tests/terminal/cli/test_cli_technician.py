"""The technician's commands say the truth (issue 18, item 7): `pipos params check` says
which CA key has expired, `pipos queue status` on a terminal that has taken no payment says
nothing waits, and `pipos provision` asks again for a technician PIN typed wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from terminal.cli import main
from tests.conftest_host import HostHandle
from tests.terminal.service.test_provision import _provision


def test_params_check_says_which_ca_key_has_expired(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["params", "check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # The embedded defaults carry Visa's test key 99, which expired on 2020-12-31.
    [expired] = [line for line in lines if line.strip().startswith("A000000003 99")]
    assert "EXPIRED on 2020-12-31" in expired
    assert "expires 2020-12-31" not in expired
    [current] = [line for line in lines if line.strip().startswith("A000000003 92")]
    assert "expires 2035-12-31" in current
    assert "EXPIRED" not in current


def test_queue_status_of_a_terminal_that_has_taken_no_payment(
    host: HostHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _provision(host, tmp_path)
    config = tmp_path / "etc" / "terminal.toml"
    assert not (tmp_path / "data" / "queue.sqlite3").exists()  # made by the first payment
    assert main(["queue", "status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "waiting to be sent: 0 payment(s)" in out
    assert "no offline queue" not in out
    assert main(["queue", "status", "--config", str(config), "--json"]) == 0
    assert '"flagged": 0' in capsys.readouterr().out


def test_queue_status_without_a_terminal_still_says_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["queue", "status", "--data-dir", str(tmp_path)]) == 2
    assert "no offline queue at" in capsys.readouterr().err


def test_provision_asks_again_for_a_short_or_mistyped_technician_pin(
    acquirer_host: HostHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = "Gx7-kP2q-w9"
    typed = iter(["12", good, good + "x", good, good])
    prompts: list[str] = []

    def getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(typed)

    monkeypatch.setattr("getpass.getpass", getpass)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    config = tmp_path / "etc" / "terminal.toml"
    status = main(
        ["provision", "--host", acquirer_host.url,
         "--activation-code", acquirer_host.activation_code(),
         "--host-key", acquirer_host.host_key_fingerprint, "--allow-plain-http",
         "--data-dir", str(tmp_path / "data"), "--config", str(config)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    # The short PIN is refused at once (not after it was repeated), the mistyped repeat
    # asks again; the run goes on.
    assert prompts == [
        "New technician PIN or pass-phrase: ",
        "New technician PIN or pass-phrase: ",
        "Repeat it: ",
        "New technician PIN or pass-phrase: ",
        "Repeat it: ",
    ]
    assert "technician" in captured.err
    assert "the two entries differ; type it again" in captured.err
    assert "provisioned" in captured.out
    pin = tmp_path / "pin"
    pin.write_text(good + "\n")
    # The PIN that was set is the one typed twice alike.
    argv = ["keys", "rotate", "--config", str(config), "--technician-pin-file", str(pin)]
    assert main(argv) == 0, capsys.readouterr().err


def test_provision_gives_up_after_three_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "12")
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    config = tmp_path / "etc" / "terminal.toml"
    status = main(
        ["provision", "--host", "http://127.0.0.1:9", "--activation-code", "CODE",
         "--allow-plain-http", "--data-dir", str(tmp_path / "data"), "--config", str(config)]
    )  # fmt: skip
    assert status == 2  # bad input, nothing done
    assert "no technician PIN after 3 tries" in capsys.readouterr().err
    assert not config.exists()
