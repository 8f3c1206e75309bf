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
        with httpx.Client(timeout=30) as browser:
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
