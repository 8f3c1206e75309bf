"""The acquirer link interface (terminal.acquirer.link.AcquirerLink): both protocols'
implementations satisfy it, as mypy checks this file, and it holds exactly what the
checkout and the offline queue's forwarder ask of an acquirer."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from terminal.acquirer.client import AcquirerClient
from terminal.acquirer.iso8583.link import Iso8583Link
from terminal.acquirer.link import AcquirerLink

ROOT = Path(__file__).resolve().parents[3]


def _both_are_links(client: AcquirerClient, iso8583: Iso8583Link) -> tuple[AcquirerLink, ...]:
    """What mypy checks (strict): an assignment that fails to type-check if either class
    stops satisfying the protocol (a method gone, a parameter renamed, a result changed)."""
    pipos_protocol: AcquirerLink = client
    iso8583_link: AcquirerLink = iso8583
    return pipos_protocol, iso8583_link


def test_both_implementations_satisfy_the_protocol_as_mypy_checks_it() -> None:
    from mypy import api

    stdout, stderr, status = api.run(
        [
            "--strict",
            "--follow-imports=silent",
            "--no-incremental",
            "--cache-dir=/dev/null",
            str(Path(__file__).relative_to(ROOT)),
        ]
    )
    assert status == 0, stdout + stderr


def _called(path: str, receivers: str) -> set[str]:
    text = (ROOT / path).read_text(encoding="utf-8")
    return set(re.findall(rf"\b(?:{receivers})\.([a-z_]+)\(", text))


def test_the_protocol_is_what_the_checkout_and_the_forwarder_call() -> None:
    called: set[str] = set()
    for path in sorted((ROOT / "terminal" / "checkout").glob("*.py")):
        called |= _called(str(path.relative_to(ROOT)), r"acquirer|self\._acquirer")
    called |= _called("terminal/acquirer/uplink.py", r"self\._client")
    # The reconciliation report asks the checkout's acquirer through its own protocol.
    called |= _called("terminal/checkout/report.py", "host")
    members = {
        name
        for name, _ in inspect.getmembers(AcquirerLink, inspect.isfunction)
        if not name.startswith("_")
    }
    assert members == called
