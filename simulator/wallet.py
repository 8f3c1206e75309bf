"""A simulated phone wallet: consumer-presented EMVCo codes with real cryptograms, wallet
payment codes (fresh, confirm-then-pay, expired, reused, corrupt, truncated), payments of
scanned merchant-presented codes, and typing codes into a scanner's pty.

Cryptograms are computed as a card would (EMV Book 2 §8.1): the ICC master key is derived
from the issuer master key (Annex A1.4, option A), the session key from it and the ATC
(the EMV common session key, Annex A1.3), and the ARQC over the Book 2 Table 26 data. A
consumer-presented code is made before the amount is known (EMVCo CPM §3.3), so the
amount in the cryptogram data is zero; the host verifies the cryptogram as sent.

Everything random or time-dependent is injected (`random`, `clock`).
"""

from __future__ import annotations

import datetime
import json
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from emv import cryptogram
from emv.qr.cpm import CpmApplication, encode_cpm
from emv.qr.wallet import DEFAULT_SCHEMES, WalletScheme

Registrar = Callable[[dict[str, Any]], None]

AIP: Final = bytes.fromhex("1980")  # SDA/DDA not used for QR; CDA off; terminal risk mgmt
IAD: Final = bytes.fromhex("06010A03A00000")


@dataclass(frozen=True)
class WalletAccount:
    """The tokenised card behind the wallet and its issuer master key (IMK-AC)."""

    pan: str
    expiry: str  # YYMM
    imk_ac: bytes  # 16 bytes, shared with the simulated host's issuer key table
    pan_sequence: int = 1
    aid: bytes = bytes.fromhex("A0000000031010")
    label: str = "SIM WALLET"
    service_code: str = "201"


class PhoneWallet:
    """One customer's phone. `register` tells the wallet provider (the host) what it issued."""

    def __init__(
        self,
        account: WalletAccount,
        *,
        random: Callable[[int], bytes],
        clock: Callable[[], float],
        register: Registrar | None = None,
        country: int = 276,
        currency: int = 978,
        schemes: tuple[WalletScheme, ...] = DEFAULT_SCHEMES,
    ) -> None:
        self.account = account
        self._random = random
        self._clock = clock
        self._register = register
        self._country = country
        self._currency = currency
        self._schemes = {s.name: s for s in schemes}
        self.atc = 0
        self.issued: list[str] = []

    # --- EMVCo consumer-presented codes -----------------------------------------------------

    def consumer_code(self, *, expired: bool = False) -> str:
        """A fresh CPM code with an ARQC; `expired` presents a card that expired in 2001."""
        self.atc += 1
        acct = self.account
        today = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC).date()
        un = self._random(4)
        master = cryptogram.derive_icc_master_key_option_a(acct.imk_ac, acct.pan, acct.pan_sequence)
        session = cryptogram.derive_common_session_key(master, self.atc)
        tvr = bytes(5)
        data = cryptogram.build_ac_data(
            amount_authorised=0,
            amount_other=0,
            terminal_country_code=self._country,
            tvr=tvr,
            transaction_currency_code=self._currency,
            transaction_date=today,
            transaction_type=0,
            unpredictable_number=un,
            aip=AIP,
            atc=self.atc,
        )
        arqc = cryptogram.generate_ac(session, data, padding=2)
        expiry = "0112" if expired else acct.expiry
        track2 = f"{acct.pan}D{expiry}{acct.service_code}0000000"
        if len(track2) % 2:
            track2 += "F"
        app = CpmApplication(
            {
                0x4F: acct.aid,
                0x50: acct.label.encode("ascii"),
                0x57: bytes.fromhex(track2),
                0x5F34: bytes.fromhex(f"{acct.pan_sequence:02d}"),
            },
            {
                0x9F26: arqc,
                0x9F27: b"\x80",
                0x9F10: IAD,
                0x9F36: self.atc.to_bytes(2, "big"),
                0x9F37: un,
                0x82: AIP,
                0x9F02: bytes(6),
                0x9F1A: bytes.fromhex(f"{self._country:04d}"),
                0x5F2A: bytes.fromhex(f"{self._currency:04d}"),
                0x95: tvr,
                0x9A: bytes.fromhex(today.strftime("%y%m%d")),
                0x9C: b"\x00",
            },
        )
        code = encode_cpm([app])
        self.issued.append(code)
        return code

    # --- wallet payment codes ---------------------------------------------------------------

    def wallet_code(
        self,
        scheme: str = "alipay",
        *,
        lifetime: int = 60,
        expired: bool = False,
        confirm_delay: float | None = None,
        confirm_outcome: str = "paid",
        balance: int | None = None,
    ) -> str:
        """A one-time payment code, registered with the provider with its behaviour.

        `confirm_delay`: the provider asks the user to confirm and the answer
        (`confirm_outcome`: paid, declined or never) comes that many seconds later.
        """
        spec = self._schemes[scheme]
        prefix = spec.prefixes[self._random(1)[0] % len(spec.prefixes)]
        length = spec.lengths[self._random(1)[0] % len(spec.lengths)]
        digits = "".join(str(b % 10) for b in self._random(length - len(prefix)))
        code = prefix + digits
        now = int(self._clock())
        issued_at = now - 2 * lifetime if expired else now
        if self._register is not None:
            self._register(
                {
                    "code": code,
                    "scheme": scheme,
                    "issued_at": issued_at,
                    "expires_at": issued_at + lifetime,
                    "confirm_delay": confirm_delay,
                    "confirm_outcome": confirm_outcome,
                    "balance": balance,
                }
            )
        self.issued.append(code)
        return code

    def reused_code(self) -> str:
        """The last code shown again (a screenshot): the host has seen it already."""
        if not self.issued:
            raise ValueError("no code was issued yet")
        return self.issued[-1]

    @staticmethod
    def corrupt(code: str) -> str:
        """A damaged read: one character in the middle replaced by one no code contains."""
        middle = len(code) // 2
        return code[:middle] + "*" + code[middle + 1 :]

    @staticmethod
    def truncate(code: str) -> str:
        """A partial read: the first two thirds only."""
        return code[: (2 * len(code)) // 3]


# --- talking to the world -------------------------------------------------------------------


def type_code(fd: int, code: str, terminator: bytes = b"\r") -> None:
    """Type `code` into the master side of a scanner pty, as a serial scanner would send it."""
    data = code.encode("utf-8") + terminator
    while data:
        written = os.write(fd, data)
        data = data[written:]


def http_registrar(host_url: str, admin_token: str | None = None) -> Registrar:
    """Register issued codes through the host's POST /admin/qr/wallet-codes (loopback)."""

    def register(record: dict[str, Any]) -> None:
        _post(f"{host_url.rstrip('/')}/admin/qr/wallet-codes", record, admin_token)

    return register


def pay_merchant_code(
    host_url: str, payload: str, *, wallet: str = "sim-wallet", result: str = "paid"
) -> dict[str, Any]:
    """The phone scanned a merchant-presented code and paid: the provider notifies the host."""
    return _post(
        f"{host_url.rstrip('/')}/qr/wallet/notify",
        {"payload": payload, "wallet": wallet, "result": result},
        None,
    )


def _post(url: str, body: dict[str, Any], admin_token: str | None) -> dict[str, Any]:
    if not url.startswith(("http://127.0.0.1", "http://localhost", "https://127.0.0.1")):
        raise ValueError("the simulated wallet only talks to a loopback host")
    headers = {"Content-Type": "application/json"}
    if admin_token:
        headers["X-Admin-Token"] = admin_token
    request = urllib.request.Request(  # noqa: S310 - loopback only, checked above
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        result: dict[str, Any] = json.loads(response.read())
        return result
