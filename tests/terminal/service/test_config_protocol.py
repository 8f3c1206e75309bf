"""The configuration file's acquirer.protocol and [iso8583] table (terminal.service.config):
what a technician writes, what is refused and how it is named, and that a file written by
`pipos provision` reads back."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from terminal.service.config import ConfigError, TerminalConfig, dump_config, parse_config


def _doc(acquirer: dict[str, Any], iso: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "acquirer": {"url": "https://tms.example:8600", **acquirer},
        "storage": {"data_dir": "/var/lib/pipos", "secret": "tpm"},
    }
    if iso is not None:
        doc["iso8583"] = iso
    return doc


ISO = {"address": "iso.example:5000", "terminal_id": "T0A1B2C3", "merchant_id": "M-DEMO-0001"}


def test_the_pipos_protocol_is_the_default() -> None:
    assert parse_config(_doc({}), "t.toml").protocol == "pipos"


def test_an_iso8583_terminal_reads_and_writes_back() -> None:
    config = parse_config(
        _doc({"protocol": "iso8583"}, ISO | {"echo_interval": 30, "ca_file": "/etc/ca.pem"}),
        "t.toml",
    )
    assert config.protocol == "iso8583"
    assert (config.iso8583_address, config.iso8583_terminal_id) == ("iso.example:5000", "T0A1B2C3")
    assert config.iso8583_echo_interval == 30
    text = dump_config(config)
    assert "[iso8583]" in text
    assert parse_config(tomllib.loads(text), "again.toml") == config


@pytest.mark.parametrize(
    ("acquirer", "iso", "message"),
    [
        ({"protocol": "x25"}, None, "acquirer.protocol: 'x25' is not one of pipos, iso8583"),
        ({"protocol": "iso8583"}, {}, "iso8583.address: missing required field"),
        ({"protocol": "iso8583"}, ISO | {"address": "iso.example"}, "expected HOST:PORT"),
        ({"protocol": "iso8583"}, ISO | {"address": "h:70000"}, "expected HOST:PORT"),
        ({"protocol": "iso8583"}, ISO | {"terminal_id": "T123456789"}, "holds 8 characters"),
        ({"protocol": "iso8583"}, ISO | {"merchant_id": "M" * 16}, "holds 15 characters"),
        ({"protocol": "iso8583"}, ISO | {"echo_interval": 1}, "5 to 3600 seconds"),
        ({"protocol": "iso8583"}, ISO | {"client_cert": "/c.pem"}, "go together"),
        ({}, ISO, 'iso8583.address: only used with acquirer.protocol = "iso8583"'),
        ({"protocol": "iso8583"}, ISO | {"colour": "red"}, "iso8583.colour: unknown field"),
    ],
)
def test_each_mistake_is_named(
    acquirer: dict[str, Any], iso: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=r"^t\.toml: ") as refused:
        parse_config(_doc(acquirer, iso), "t.toml")
    assert message in str(refused.value)


def test_the_dataclass_default_is_pipos() -> None:
    assert TerminalConfig(host_url="x", data_dir=Path("/d")).protocol == "pipos"
