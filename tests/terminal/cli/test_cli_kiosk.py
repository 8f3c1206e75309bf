"""`pipos kiosk`: the launcher reads the running terminal's one-time code from its 0600 file
and opens (here: prints) the link that trades it for the checkout page's session."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from terminal.api.stack import start_demo_stack
from terminal.cli import main
from tests.conftest_host import TEST_SCRYPT_N, TEST_SECRET, HostHandle

#: What Chromium says of a navigation the kiosk's launcher started (a page cannot say it).
NAVIGATION = {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"}


@pytest.mark.integration
def test_print_url_opens_the_page_once(
    tmp_path: Path, session_host: HostHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "run"
    stack = start_demo_stack(
        state,
        host_url=session_host.url,
        activation_code=session_host.activation_code,
        secret=TEST_SECRET,
        scrypt_n=TEST_SCRYPT_N,
        background=False,
    )
    try:
        argv = ["kiosk", "--state-dir", str(state), "--url", stack.api.url, "--print-url"]
        assert main(argv) == 0
        url = capsys.readouterr().out.strip()
        assert url.startswith(stack.api.url + "/kiosk?code=")
        with httpx.Client(timeout=30, headers=NAVIGATION) as browser:
            opened = browser.get(url, follow_redirects=True)
            assert opened.status_code == 200
            assert "checkout.js" in opened.text
            assert browser.get(url).status_code == 403  # spent
        assert main(argv) == 0
        assert capsys.readouterr().out.strip() != url  # the next launch gets a new code
    finally:
        stack.close()
    # A stopped terminal leaves no code behind.
    assert main(["kiosk", "--state-dir", str(state), "--print-url"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_a_code_file_others_can_read_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = tmp_path / "kiosk-code"
    code.write_text("abcdef\n")
    os.chmod(code, 0o640)
    assert main(["kiosk", "--code-file", str(code), "--print-url"]) == 1
    assert "readable by group or others" in capsys.readouterr().err
    os.chmod(code, 0o600)
    assert main(["kiosk", "--code-file", str(code), "--print-url"]) == 0
    assert capsys.readouterr().out.strip() == "http://127.0.0.1:8700/kiosk?code=abcdef"


def test_no_browser_says_what_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code = tmp_path / "kiosk-code"
    code.write_text("abcdef\n")
    os.chmod(code, 0o600)
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium on it
    assert main(["kiosk", "--code-file", str(code)]) == 1
    assert "apt-get install chromium" in capsys.readouterr().err


class _Stopped(KeyboardInterrupt):
    """Ctrl-C, as `pipos run`'s wait gets it."""


def _run_until_banner(argv: list[str], code_file: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """`pipos run ARGV` in this process, stopped (as by Ctrl-C) once its banner is out; the
    one-time code that was in the code file meanwhile."""
    from types import SimpleNamespace

    import terminal.cli.run as run_module
    import terminal.cli.service as service_module

    seen: list[str] = []

    def wait(seconds: float) -> None:
        seen.append(code_file.read_text().strip())
        raise _Stopped

    monkeypatch.setattr(run_module, "time", SimpleNamespace(sleep=wait))
    # Not this test process's SIGTERM: Ctrl-C stops the run here.
    monkeypatch.setattr(service_module, "install_sigterm_handler", lambda: None)
    assert main(argv) == 0
    assert len(seen) == 1
    assert seen[0]
    return seen[0]


def _provisioned(host: HostHandle, tmp_path: Path) -> Path:
    from terminal.service.provision import provision

    config_path = tmp_path / "etc" / "terminal.toml"
    provision(
        host_url=host.url,
        activation_code=host.activation_code(),
        config_path=config_path,
        technician_secret="270513",
        data_dir=tmp_path / "data",
        reader_url="sim:visa",
        scrypt_n=TEST_SCRYPT_N,
        **host.provision_options(),
    )
    technician = tmp_path / "technician-pin"
    technician.write_text("270513\n")
    merchant = tmp_path / "merchant-pin-new"
    merchant.write_text("5831\n")
    os.chmod(merchant, 0o600)
    argv = ["merchant-pin", "set", "--config", str(config_path)]
    assert main([*argv, "--technician-pin-file", str(technician), "--pin-file", str(merchant)]) == 0
    return config_path


@pytest.mark.integration
def test_the_provisioned_banner_says_how_to_open_the_kiosk_never_the_code(
    tmp_path: Path,
    session_host: HostHandle,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = _provisioned(session_host, tmp_path)
    capsys.readouterr()
    argv = ["run", "--config", str(config), "--port", "0"]
    code = _run_until_banner(argv, tmp_path / "data" / "kiosk-code", monkeypatch)
    printed = capsys.readouterr()
    journal = printed.out + printed.err  # under systemd, both go to journalctl -u pipos
    assert f"pipos kiosk --config {config}" in journal
    assert code not in journal
    assert "code=" not in journal
    assert "one-time link" not in journal


@pytest.mark.integration
def test_the_demo_banner_keeps_its_one_time_link(
    tmp_path: Path,
    session_host: HostHandle,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = tmp_path / "run"
    argv = [
        "run",
        "--state-dir",
        str(state),
        "--acquirer",
        session_host.url,
        "--activation-code",
        session_host.activation_code(),
        "--port",
        "0",
    ]
    code = _run_until_banner(argv, state / "terminal" / "kiosk-code", monkeypatch)
    out = capsys.readouterr().out
    assert f"/kiosk?code={code}" in out  # the developer's own terminal
    assert f"pipos kiosk --state-dir {state}" in out


@pytest.mark.integration
def test_the_launcher_opens_the_page_again_once_its_session_has_ended(
    tmp_path: Path, session_host: HostHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    from terminal.api.kiosk import SESSION_MAX_AGE

    now = [1_800_000_000.0]
    state = tmp_path / "run"
    stack = start_demo_stack(
        state,
        host_url=session_host.url,
        activation_code=session_host.activation_code,
        secret=TEST_SECRET,
        scrypt_n=TEST_SCRYPT_N,
        background=False,
        session_clock=lambda: now[0],
    )
    argv = ["kiosk", "--state-dir", str(state), "--url", stack.api.url, "--print-url"]
    page = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
    try:
        with httpx.Client(timeout=30, headers=NAVIGATION) as browser:
            assert main(argv) == 0
            assert browser.get(capsys.readouterr().out.strip()).status_code == 303
            assert browser.get(stack.api.url + "/api/v1/status", headers=page).status_code == 200
            now[0] += SESSION_MAX_AGE  # a day later
            ended = browser.get(stack.api.url + "/api/v1/status", headers=page)
            assert ended.status_code == 401
            shown = browser.get(stack.api.url + "/")
            assert shown.status_code == 401
            assert "pipos kiosk" in shown.text
            # The launcher, run again, finds a live code and the page opens.
            assert main(argv) == 0
            opened = browser.get(capsys.readouterr().out.strip(), follow_redirects=True)
            assert opened.status_code == 200
            assert "checkout.js" in opened.text
            assert browser.get(stack.api.url + "/api/v1/status", headers=page).status_code == 200
    finally:
        stack.close()
