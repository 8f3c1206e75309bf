"""Receipts: merchant and customer copies, as text, HTML and ESC/POS.

What a card receipt carries (the schemes' receipt requirements, e.g. Visa Core Rules
"Transaction Receipt Data Requirements" and EMV Book 4 §11.4 "Receipt Data"): merchant name
and location, merchant and terminal identifiers, date and time, the transaction type, the
masked PAN, the AID and application label, the entry mode, the amount with its currency, the
authorisation code or "OFFLINE", the application cryptogram, the CVM statement, and whether it
was approved. The customer copy truncates the PAN to its last four digits; the merchant copy
keeps first six and last four (PCI DSS 3.3).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal
from urllib.parse import parse_qsl

from .currency import format_amount
from .errors import TerminalError
from .messages import Result, message_for
from .params import TerminalParams
from .records import TxnRecord

__all__ = ["PrinterError", "Receipt", "build_receipt", "open_printer", "print_receipt"]

Copy = Literal["merchant", "customer"]
WIDTH: Final = 32  # characters on a 58 mm thermal printer in font A

_TITLES: Final = {"sale": "SALE", "refund": "REFUND", "void": "VOID"}
#: Entry modes as printed; code payments name the way the code was presented.
_ENTRY: Final = {
    "contactless": "CONTACTLESS",
    "qr": "QR CODE",
    "qr_consumer": "QR CODE (CUSTOMER)",
    "qr_wallet": "WALLET CODE",
    "qr_merchant": "QR CODE (MERCHANT)",
}
_CVM: Final = {
    "no_cvm": "NO CARDHOLDER VERIFICATION",
    "cdcvm": "CARDHOLDER VERIFIED BY DEVICE",
    "online_pin": "PIN VERIFIED ONLINE",
    "signature": "SIGNATURE REQUIRED",
}


class PrinterError(TerminalError):
    """The receipt printer could not be opened or did not accept the receipt."""


@dataclass(frozen=True, slots=True)
class Receipt:
    copy: Copy
    title: str
    header: tuple[str, ...]
    lines: tuple[tuple[str, str], ...]  # (label, value)
    status: str
    footer: tuple[str, ...]
    signature_line: bool

    def text(self, width: int = WIDTH) -> str:
        out: list[str] = [line.center(width).rstrip() for line in self.header]
        out.append("")
        out.append(self.title.center(width).rstrip())
        out.append("")
        for label, value in self.lines:
            if len(label) + len(value) + 1 <= width:
                out.append(label + value.rjust(width - len(label)))
            else:
                out.append(label)
                out.append(value.rjust(width))
        out.append("")
        out.append(self.status.center(width).rstrip())
        if self.signature_line:
            out += ["", "", "X" + "_" * (width - 1), "CARDHOLDER SIGNATURE"]
        out.append("")
        out += [line.center(width).rstrip() for line in self.footer]
        return "\n".join(out) + "\n"

    def html(self) -> str:
        rows = "".join(
            f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
            for label, value in self.lines
        )
        head = "".join(f"<div>{html.escape(line)}</div>" for line in self.header)
        foot = "".join(f"<div>{html.escape(line)}</div>" for line in self.footer)
        sign = '<div class="sign">X____________________</div>' if self.signature_line else ""
        return (
            f'<div class="receipt" data-copy="{self.copy}">'
            f'<div class="r-head">{head}</div>'
            f'<h3 class="r-title">{html.escape(self.title)}</h3>'
            f'<table class="r-lines">{rows}</table>'
            f'<div class="r-status">{html.escape(self.status)}</div>{sign}'
            f'<div class="r-foot">{foot}</div></div>'
        )


def _pan_for(copy: Copy, masked: str) -> str:
    if not masked:
        return ""
    if copy == "customer":
        return "*" * (len(masked) - 4) + masked[-4:]
    return masked


def build_receipt(
    record: TxnRecord, params: TerminalParams, copy: Copy, *, terminal_id: str = ""
) -> Receipt:
    """The receipt for a finished transaction (in_progress transactions have none)."""
    if not record.finished:
        raise TerminalError(f"transaction {record.id} has not finished; no receipt yet")
    term = params.terminal
    name, _, place = term.merchant_name_location.partition(",")
    header = tuple(x for x in (name.strip(), place.strip()) if x)
    when = datetime.fromisoformat(record.created_at)
    approved = record.state in ("approved", "approved_offline")
    lines: list[tuple[str, str]] = [
        ("MERCHANT", term.merchant_identifier),
        ("TERMINAL", terminal_id or term.terminal_identifier),
        ("DATE", when.strftime("%Y-%m-%d")),
        ("TIME", when.strftime("%H:%M:%S")),
        ("TXN", record.id),
    ]
    by_code = record.entry_mode.startswith("qr")
    if by_code:
        # Code payments: say so, and show the wallet code or the account masked like a PAN.
        lines.append(("PAYMENT", "QR / WALLET"))
    if record.masked_pan:
        label = "CODE" if record.entry_mode == "qr_wallet" else "CARD"
        lines.append((label, _pan_for(copy, record.masked_pan)))
    if record.brand:
        lines.append(("APP", record.brand))
    if record.aid:
        lines.append(("AID", record.aid))
    lines.append(("ENTRY", _ENTRY.get(record.entry_mode, record.entry_mode.upper())))
    if approved:
        if record.kind == "sale" and record.state == "approved_offline":
            lines.append(("AUTH CODE", "OFFLINE"))
        elif record.auth_code:
            lines.append(("AUTH CODE", record.auth_code))
    if record.cryptogram:
        lines.append((record.cryptogram_kind or "AC", record.cryptogram))
    if record.atc:
        lines.append(("ATC", record.atc))
    if record.tvr:
        lines.append(("TVR", record.tvr))
    if record.host_ref:
        lines.append(("REF", record.host_ref))
    order_id = record.qr_order_id if by_code else ""
    if order_id:
        lines.append(("ORDER", str(order_id)))
    if record.original_id:
        lines.append(("ORIGINAL", record.original_id))
    amount = format_amount(record.amount, record.currency)
    lines.append(("AMOUNT", ("-" if record.kind == "refund" else "") + amount))
    if record.cvm:
        lines.append(("CVM", _CVM.get(record.cvm, record.cvm.upper())))
    status = (
        "APPROVED"
        if approved
        else "DECLINED"
        if record.state == "declined"
        else record.state.upper()
    )
    if record.result:
        english = message_for(Result(record.result), "en", amount=amount)
        if not approved:
            status = f"{status} - {english.customer.upper()}"
    footer = (
        "MERCHANT COPY" if copy == "merchant" else "CUSTOMER COPY",
        "PLEASE RETAIN THIS RECEIPT" if copy == "customer" else "",
    )
    return Receipt(
        copy=copy,
        title=_TITLES.get(record.kind, record.kind.upper()),
        header=header,
        lines=tuple(lines),
        status=status,
        footer=tuple(x for x in footer if x),
        signature_line=approved and record.cvm == "signature" and copy == "merchant",
    )


# --- ESC/POS -------------------------------------------------------------------------------


def open_printer(url: str) -> object:
    """A python-escpos printer from a URL: ``file:/dev/usb/lp0`` (or any file, for tests),
    ``serial:/dev/ttyUSB0?baudrate=19200``, ``usb:04b8:0202``, ``dummy:``."""
    scheme, _, rest = url.partition(":")
    path, _, query = rest.partition("?")
    options = dict(parse_qsl(query))
    try:
        from escpos import printer  # type: ignore[import-untyped]

        if scheme == "file":
            return printer.File(path)
        if scheme == "serial":
            return printer.Serial(
                devfile=path, baudrate=int(options.get("baudrate", options.get("baud", "9600")))
            )
        if scheme == "usb":
            vendor, _, product = path.partition(":")
            return printer.Usb(int(vendor, 16), int(product, 16))
        if scheme == "dummy":
            return printer.Dummy()
    except ImportError as exc:
        raise PrinterError(
            "receipt printing needs python-escpos (pip install python-escpos)"
        ) from exc
    except _printer_errors() as exc:  # python-escpos's own, the device's; translated here
        raise PrinterError(f"cannot open printer {url!r}: {exc}") from exc
    raise PrinterError(f"unknown printer address {url!r}: use file:, serial:, usb: or dummy:")


def _printer_errors() -> tuple[type[Exception], ...]:
    """What printing may raise that is not a bug: python-escpos's errors, the device's (a
    serial or USB fault is an OSError), a bad vendor or product number."""
    from escpos.exceptions import Error as EscposError  # type: ignore[import-untyped]

    return (EscposError, OSError, ValueError)


def print_receipt(printer_url: str, receipts: Sequence[Receipt]) -> bytes | None:
    """Print the receipts, each followed by a cut. Returns the bytes for a dummy: printer."""
    device = open_printer(printer_url)
    try:
        for receipt in receipts:
            device.set(align="center", bold=True)  # type: ignore[attr-defined]
            for line in receipt.header:
                device.text(line + "\n")  # type: ignore[attr-defined]
            device.set(align="left", bold=False)  # type: ignore[attr-defined]
            body = receipt.text().split("\n")[len(receipt.header) :]
            device.text("\n".join(body))  # type: ignore[attr-defined]
            device.cut()  # type: ignore[attr-defined]
        output = getattr(device, "output", None)
        return bytes(output) if output is not None else None
    except _printer_errors() as exc:
        raise PrinterError(f"printer {printer_url!r} failed: {exc}") from exc
    finally:
        close = getattr(device, "close", None)
        if close is not None:
            close()
