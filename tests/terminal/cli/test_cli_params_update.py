"""`pipos params update` as a technician types it: the diff on the terminal and, with
--json, for a script (issue 18, item 7). A host of the test's own under uvicorn: the command
reaches it by the URL in the configuration, and the test changes its parameters."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from terminal.cli import main
from tests.conftest_host import HostHandle
from tests.terminal.service.test_params_update_diff import _before
from tests.terminal.service.test_provision import PIN


def test_params_update_prints_the_diff_and_json(
    acquirer_host: HostHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pin = tmp_path / "pin"
    pin.write_text(PIN + "\n")
    config = tmp_path / "etc" / "terminal.toml"
    args = ["--config", str(config), "--technician-pin-file", str(pin)]
    assert main(
        ["provision", "--host", acquirer_host.url, "--activation-code",
         acquirer_host.activation_code(), "--host-key", acquirer_host.host_key_fingerprint,
         "--allow-plain-http", "--data-dir", str(tmp_path / "data"), *args]
    ) == 0  # fmt: skip
    before = _before()
    acquirer_host.set_parameters(before)
    assert main(["params", "update", *args]) == 0
    capsys.readouterr()

    after = copy.deepcopy(before)
    after["terminal"]["currency_code"] = 826
    after["offline"]["max_total_amount"] = {"826": 40000}
    after["aids"][0]["limits"]["cvm_required"] = 3000
    version = acquirer_host.set_parameters(after)
    assert main(["params", "update", *args]) == 0
    out = capsys.readouterr().out
    assert f"parameters updated: version {version - 1} -> {version}" in out
    assert "terminal: currency EUR (978) -> GBP (826)" in out
    # An amount changed is shown in each side's own currency; one that only changed
    # currency is not listed again (the currency line says it).
    assert (
        "application A0000000031010 VISA: DF8126 Reader CVM Required Limit 000000005000 "
        "(50.00 EUR) -> 000000003000 (30.00 GBP)" in out
    )
    assert "offline: total at most in GBP (826) added (400.00 GBP)" in out
    assert "DF8124" not in out
    assert "MASTERCARD" not in out

    after["terminal"]["language"] = "zh"
    version = acquirer_host.set_parameters(after)
    assert main(["params", "update", "--json", *args]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["new_version"] == version
    assert report["changed"] is True
    assert report["same_version_changed"] is False
    assert report["changes"] == [
        {"section": "terminal", "item": "language", "old": "en", "new": "zh"}
    ]
    assert main(["params", "update", "--json", *args]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False
