"""`pipos params update` says what changed (issue 18, item 7): the terminal's data, each
application added, removed or changed (its kernel data objects by tag and name, limits in
money), offline acceptance, QR codes, CA keys; and a version the acquirer re-issued with other
content is installed and said so, never "up to date". Against the simulated host, in process."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from terminal.service.config import load_config
from tests.conftest_host import HostHandle
from tests.terminal.service.test_provision import PIN, _ca_key, _full_params, _provision, _service


def _before() -> dict[str, Any]:
    return _full_params(
        [_ca_key("A000000003", "A1", "2040-12-31"), _ca_key("A000000004", "B2", "2040-12-31")]
    )


def _after(before: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(before)
    doc["terminal"]["language"] = "zh"
    visa, mastercard = doc["aids"]
    visa["limits"]["contactless_transaction"] = 10000
    visa["limits"]["contactless_transaction_on_device_cvm"] = 80000
    mastercard["kernel_data"]["DF8118"] = "60"
    electron = copy.deepcopy(visa)
    electron["aid"], electron["label"] = "A0000000032010", "ELECTRON"
    doc["aids"].append(electron)
    doc["offline"]["max_count"] = 20
    doc["qr"]["merchant_presented"] = False
    doc["ca_public_keys"] = [
        _ca_key("A000000003", "A1", "2041-12-31"),
        _ca_key("A000000004", "B3", "2040-12-31"),
    ]
    return doc


def test_params_update_says_what_changed(inprocess_host: HostHandle, tmp_path: Path) -> None:
    _provision(inprocess_host, tmp_path)
    before = _before()
    inprocess_host.set_parameters(before)
    service = _service(tmp_path, inprocess_host)
    assert service.update_parameters(PIN).changed
    version = inprocess_host.set_parameters(_after(before))

    update = service.update_parameters(PIN)
    lines = update.summary_lines()
    text = "\n".join(lines)
    assert lines[0] == f"parameters updated: version {version - 1} -> {version}"
    assert "  terminal: language en -> zh" in lines
    visa = "application A0000000031010 VISA"
    assert (
        f"  {visa}: DF8124 Reader Contactless Transaction Limit (No On-device CVM) "
        "000000015000 (150.00 EUR) -> 000000010000 (100.00 EUR)" in lines
    ), text
    assert f"  {visa}: contactless limit with on-device CVM 1000.00 EUR -> 800.00 EUR" in lines
    assert (
        "  application A0000000041010 MASTERCARD: DF8118 CVM Capability - CVM Required "
        "20 -> 60" in lines
    ), text
    assert "  application A0000000032010 ELECTRON: application added (kernel 3)" in lines
    assert "  offline: payments at most 100 -> 20" in lines
    assert "  QR codes: merchant-presented codes on -> off" in lines
    assert "  CA key A000000003/A1: expiry 2040-12-31 -> 2041-12-31" in lines
    assert "  CA keys added:   A000000004/B3" in lines
    assert "  CA keys removed: A000000004/B2" in lines
    # Nothing else is listed: the Visa TACs, the currency, ... did not change.
    assert "currency" not in text
    assert "TAC" not in text

    as_json = json.loads(json.dumps(update.to_json()))
    assert as_json["old_version"] == version - 1
    assert as_json["new_version"] == version
    assert {"section": "terminal", "item": "language", "old": "en", "new": "zh"} in as_json[
        "changes"
    ]
    assert as_json["ca_keys_added"] == ["A000000004/B3"]


def test_an_application_removed_is_said(inprocess_host: HostHandle, tmp_path: Path) -> None:
    _provision(inprocess_host, tmp_path)
    before = _before()
    inprocess_host.set_parameters(before)
    service = _service(tmp_path, inprocess_host)
    service.update_parameters(PIN)
    after = copy.deepcopy(before)
    after["aids"] = after["aids"][:1]
    inprocess_host.set_parameters(after)
    lines = service.update_parameters(PIN).summary_lines()
    assert "  application A0000000041010 MASTERCARD: application removed (was kernel 2)" in lines
    assert len(lines) == 2, lines


def test_a_version_reissued_with_other_content_is_installed_not_up_to_date(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    _provision(inprocess_host, tmp_path)
    before = _before()
    version = inprocess_host.set_parameters(before)
    service = _service(tmp_path, inprocess_host)
    service.update_parameters(PIN)
    # The acquirer changes the content and keeps the version number (its own mistake, or a
    # restore of its database): only the content digest can tell.
    changed = copy.deepcopy(before)
    changed["terminal"]["language"] = "zh"
    inprocess_host.app.host.store.set_config("parameters", changed)

    update = service.update_parameters(PIN)
    assert update.changed
    assert update.same_version_changed
    lines = update.summary_lines()
    assert lines[0] == (
        f"parameters updated: the acquirer re-issued version {version} with other content "
        "(the content digest differs); installed"
    )
    assert "  terminal: language en -> zh" in lines
    installed = json.loads((tmp_path / "data" / "parameters.json").read_text())
    assert installed["params"]["terminal"]["language"] == "zh"
    assert load_config(tmp_path / "etc" / "terminal.toml").params_version == version
    # Now the same version with the same content: up to date, and said so.
    again = service.update_parameters(PIN)
    assert not again.changed
    assert again.summary_lines() == [f"parameters are up to date (version {version}, same content)"]


def test_a_new_version_with_the_same_content_says_nothing_changed(
    inprocess_host: HostHandle, tmp_path: Path
) -> None:
    _provision(inprocess_host, tmp_path)
    before = _before()
    inprocess_host.set_parameters(before)
    service = _service(tmp_path, inprocess_host)
    service.update_parameters(PIN)
    version = inprocess_host.set_parameters(before)
    assert service.update_parameters(PIN).summary_lines() == [
        f"parameters updated: version {version - 1} -> {version}",
        "  nothing the terminal uses changed",
    ]
