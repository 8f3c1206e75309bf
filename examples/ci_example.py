#!/usr/bin/env python3
"""A CI job's end-to-end check of a pipos terminal, in the Python standard library only.

Start a headless demo terminal first (docs/ci.md, "A headless terminal"):

    pipos run --state-dir "$RUNNER_TEMP/pipos" --port 8700 --token "$PIPOS_TOKEN" \\
        --ready-file "$RUNNER_TEMP/pipos.ready" &

then run this script against it:

    python examples/ci_example.py --ready-file "$RUNNER_TEMP/pipos.ready" --token "$PIPOS_TOKEN"

It waits until the terminal answers GET /health, then, through the register's API:

1. a sale of 12.34 EUR paid with the simulated Visa card: must be approved;
2. a sale of 10.51 EUR with the simulated Mastercard: must be declined by the bank with
   response code 51 (the simulated acquirer's rule: an amount ending in .51 is "insufficient
   funds");
3. a refund of 2.34 EUR of the first sale (the merchant PIN): must be approved;

and prints one line per step. Exit status 0: every outcome was the expected one; 1: an
outcome was not, or the terminal did not answer; 2: the script was called wrongly. Each
request that moves money carries an Idempotency-Key, so a CI retry of a step whose answer
was lost never charges twice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

#: The demo terminal's merchant PIN (pipos run prints it; `pipos run --pin` sets another).
DEMO_PIN = "4826"
EUR = 978
#: States a transaction ends in (GET /api/v1/transactions/{id}); anything else is running.
FINAL_STATES = frozenset({"approved", "approved_offline", "declined", "cancelled", "failed"})


class CheckError(Exception):
    """An outcome other than the expected one, or a terminal that does not answer."""


class Terminal:
    """The register's side of the pipos API: JSON over HTTP with a bearer token."""

    def __init__(self, url: str, token: str, timeout: float) -> None:
        if not url.startswith(("http://", "https://")):
            # urllib would open file: and other schemes too: only the terminal's API here.
            raise CheckError(f"{url[:80]!r} is not an http:// or https:// address")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, key: str = ""
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if key:
            headers["Idempotency-Key"] = key
        request = urllib.request.Request(self.url + path, data, headers, method=method)  # noqa: S310 (http(s) only: __init__)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:  # a 4xx/5xx still carries the error envelope
            text = error.read()
            try:
                return error.code, json.loads(text or b"{}")
            except ValueError:
                return error.code, {"error": {"message": text[:200].decode(errors="replace")}}
        except (urllib.error.URLError, OSError) as exc:
            raise CheckError(f"{method} {path}: the terminal does not answer ({exc})") from exc

    def wait_until_up(self, deadline: float) -> None:
        """GET /health (no token needed) until it answers {"status": "ok"}."""
        last = ""
        while time.monotonic() < deadline:
            try:
                health = self.url + "/health"
                with urllib.request.urlopen(health, timeout=2) as response:  # noqa: S310
                    if json.loads(response.read()).get("status") == "ok":
                        return
            except (urllib.error.URLError, OSError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise CheckError(f"{self.url}/health did not answer ok in time ({last})")

    def sale(self, amount: int, card: str, deadline: float) -> dict[str, Any]:
        """Start a sale, tap the simulated `card`, wait for the sale's final state."""
        status, txn = self.call(
            "POST", "/api/v1/sales", {"amount": amount, "currency": EUR}, key=str(uuid.uuid4())
        )
        if status != 202:
            raise CheckError(f"sale of {amount} refused ({status}): {_error(txn)}")
        status, answer = self.call("POST", "/api/v1/simulator/present", {"card": card})
        if status != 200:
            raise CheckError(f"card {card} not presented ({status}): {_error(answer)}")
        return self.wait_final(str(txn["id"]), deadline)

    def wait_final(self, txn_id: str, deadline: float) -> dict[str, Any]:
        while time.monotonic() < deadline:
            status, txn = self.call("GET", f"/api/v1/transactions/{txn_id}")
            if status != 200:
                raise CheckError(f"transaction {txn_id} ({status}): {_error(txn)}")
            if txn.get("state") in FINAL_STATES:
                return txn
            time.sleep(0.2)
        raise CheckError(f"transaction {txn_id} did not finish in time")


def _error(body: dict[str, Any]) -> str:
    error = body.get("error")
    return str(error.get("message", error)) if isinstance(error, dict) else json.dumps(body)


def _expect(step: str, txn: dict[str, Any], state: str, response_code: str | None = None) -> str:
    got = txn.get("state")
    code = txn.get("response_code") or ""
    if got != state or (response_code is not None and code != response_code):
        wanted = state + (f" (response code {response_code})" if response_code else "")
        message = (txn.get("message") or {}).get("merchant", "")
        raise CheckError(f"{step}: expected {wanted}, got {got} {code} {message}".rstrip())
    return f"{step}: {got}" + (f" ({code})" if code else "") + f", transaction {txn.get('id')}"


def run_checks(terminal: Terminal, pin: str, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    terminal.wait_until_up(deadline)
    lines = ["terminal is up: GET /health ok"]
    sale = terminal.sale(1234, "visa", deadline)
    lines.append(_expect("sale 12.34 EUR, sim:visa", sale, "approved", "00"))
    declined = terminal.sale(1051, "mastercard", deadline)
    lines.append(_expect("sale 10.51 EUR, sim:mastercard", declined, "declined", "51"))
    status, refund = terminal.call(
        "POST",
        f"/api/v1/transactions/{sale['id']}/refund",
        {"pin": pin, "amount": 234},
        key=str(uuid.uuid4()),
    )
    if not 200 <= status < 300:
        raise CheckError(f"refund refused ({status}): {_error(refund)}")
    if refund.get("state") not in FINAL_STATES:
        refund = terminal.wait_final(str(refund["id"]), deadline)
    lines.append(_expect("refund 2.34 EUR of the sale", refund, "approved"))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Check a running pipos terminal end to end: a sale, a decline, a refund."
    )
    parser.add_argument(
        "--url", default=os.environ.get("PIPOS_URL"), help="the terminal's API (env PIPOS_URL)"
    )
    parser.add_argument(
        "--ready-file",
        help="the file `pipos run --ready-file` writes: wait for it, take the URL from it",
    )
    parser.add_argument(
        "--token", default=os.environ.get("PIPOS_TOKEN"), help="register token (env PIPOS_TOKEN)"
    )
    parser.add_argument(
        "--pin",
        default=os.environ.get("PIPOS_MERCHANT_PIN", DEMO_PIN),
        help="merchant PIN for the refund (env PIPOS_MERCHANT_PIN; default the demo PIN)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for everything")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("--token (or PIPOS_TOKEN) is required: the token given to pipos run")
    started = time.monotonic()
    url = args.url
    try:
        if args.ready_file:
            url = _url_from_ready_file(Path(args.ready_file), started + args.timeout)
        if not url:
            parser.error("give --url (or PIPOS_URL) or --ready-file")
        remaining = args.timeout - (time.monotonic() - started)
        lines = run_checks(Terminal(url, args.token, timeout=10), args.pin, remaining)
    except CheckError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    print("all checks passed")
    return 0


def _url_from_ready_file(path: Path, deadline: float) -> str:
    """pipos run writes the file whole (renamed into place) once its API listens."""
    while time.monotonic() < deadline:
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["url"])
        except FileNotFoundError:
            time.sleep(0.2)
        except (OSError, ValueError, KeyError) as exc:
            raise CheckError(f"{path}: not a pipos ready file ({exc})") from exc
    raise CheckError(f"{path} did not appear in time: did pipos run start?")


if __name__ == "__main__":
    sys.exit(main())
