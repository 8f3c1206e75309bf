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
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, Protocol
from urllib.parse import parse_qsl

from .currency import UnknownCurrencyError, currency, format_amount
from .errors import TerminalError
from .messages import Result, brand_text, message_for, receipt_text
from .params import TerminalParams
from .records import TxnRecord

__all__ = [
    "BatchReport",
    "Printable",
    "PrinterError",
    "Receipt",
    "build_receipt",
    "open_printer",
    "print_receipt",
    "report_html",
    "report_text_lines",
]

Copy = Literal["merchant", "customer"]
WIDTH: Final = 32  # characters on a 58 mm thermal printer in font A (a CJK character: two)


def _cells(text: str) -> int:
    """Printer columns `text` takes: wide (CJK) characters take two, as on the paper."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _center(text: str, width: int) -> str:
    pad = max(width - _cells(text), 0)
    left = pad // 2 + (pad & width & 1)  # as str.center splits an odd margin
    return (" " * left + text).rstrip()


def _rjust(text: str, width: int) -> str:
    return " " * max(width - _cells(text), 0) + text


def _wrap(text: str, width: int) -> list[str]:
    """`text` cut into lines of at most `width` columns (Chinese has no spaces to cut at)."""
    lines: list[str] = []
    line = ""
    for char in text:
        if _cells(line + char) > width:
            lines.append(line)
            line = ""
        line += char
    return [*lines, line] if line else lines


def _wrap_words(text: str, width: int) -> list[str]:
    """`text` cut into lines of at most `width` columns at its spaces (English), or
    anywhere when a word is longer than a line or there are no spaces (Chinese)."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        joined = f"{line} {word}" if line else word
        if _cells(joined) <= width:
            line = joined
            continue
        if line:
            lines.append(line)
        pieces = _wrap(word, width) or [""]
        lines += pieces[:-1]
        line = pieces[-1]
    return [*lines, line] if line else lines


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
    #: Under the signature line ("CARDHOLDER SIGNATURE"), and above it (a Chinese slip's
    #: cardholder declaration); both in the receipt's language.
    signature_label: str = "CARDHOLDER SIGNATURE"
    signature_note: str = ""
    language: str = "en"

    def text(self, width: int = WIDTH) -> str:
        out: list[str] = [_center(line, width) for line in self.header]
        out.append("")
        out.append(_center(self.title, width))
        out.append("")
        for label, value in self.lines:
            if self.language != "en":
                label = label + "："  # a Chinese slip's "标签：值"
            if _cells(label) + _cells(value) + 1 <= width:
                out.append(label + _rjust(value, width - _cells(label)))
            else:
                out.append(label)
                out.append(_rjust(value, width))
        out.append("")
        out.append(_center(self.status, width))
        if self.signature_line:
            out += ["", *_wrap(self.signature_note, width), ""]
            out += ["X" + "_" * (width - 1), self.signature_label]
        out.append("")
        out += [_center(line, width) for line in self.footer]
        return "\n".join(out) + "\n"

    def html(self) -> str:
        rows = "".join(
            f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
            for label, value in self.lines
        )
        head = "".join(f"<div>{html.escape(line)}</div>" for line in self.header)
        foot = "".join(f"<div>{html.escape(line)}</div>" for line in self.footer)
        # English as it always was; another language names its signature line and says
        # which language it is in (the page's fonts and a screen reader use it).
        label = "" if self.language == "en" else f"<br>{html.escape(self.signature_label)}"
        sign = (
            f'<div class="sign">X____________________{label}</div>' if self.signature_line else ""
        )
        lang = "" if self.language == "en" else f' lang="{html.escape(self.language)}"'
        return (
            f'<div class="receipt" data-copy="{self.copy}"{lang}>'
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
    record: TxnRecord,
    params: TerminalParams,
    copy: Copy,
    *,
    terminal_id: str = "",
    language: str | None = None,
) -> Receipt:
    """The receipt for a finished transaction (in_progress transactions have none), in
    `language` (default: the terminal's, ``terminal.language``): English is the card receipt
    of EMV Book 4; Chinese is the 签购单 a Chinese merchant expects."""
    if not record.finished:
        raise TerminalError(f"transaction {record.id} has not finished; no receipt yet")
    lang = params.terminal.language if language is None else language
    if lang == "zh":
        return _chinese(record, params, copy, terminal_id)
    return _english(record, params, copy, terminal_id)


def _word(key: str, language: str) -> str:
    return receipt_text(key, language)


def _status(record: TxnRecord, language: str, amount: str) -> tuple[bool, str]:
    """Whether the receipt is of an approved transaction, and its status line. An offline
    sale the bank declined when it was sent is no longer approved: a receipt printed after
    that says so (and asks for no signature), never "APPROVED"."""
    if record.declined_after_the_fact:
        return False, _word("status_declined_after_the_fact", language)
    approved = record.state in ("approved", "approved_offline")
    key = "approved" if approved else str(record.state)
    status = _word(f"status_{key}", language) or str(record.state).upper()
    if record.result and not approved:
        said = message_for(Result(record.result), language, amount=amount).customer
        said = said.upper() if language == "en" else said
        if said != status:  # not "DECLINED - DECLINED"
            status = f"{status} - {said}"
    return approved, status


def _english(record: TxnRecord, params: TerminalParams, copy: Copy, terminal_id: str) -> Receipt:
    en = "en"
    term = params.terminal
    name, _, place = term.merchant_name_location.partition(",")
    header = tuple(x for x in (name.strip(), place.strip()) if x)
    when = datetime.fromisoformat(record.created_at)
    amount = format_amount(record.amount, record.currency)
    approved, status = _status(record, en, amount)
    lines: list[tuple[str, str]] = [
        (_word("merchant", en), term.merchant_identifier),
        (_word("terminal", en), terminal_id or term.terminal_identifier),
        (_word("date", en), when.strftime("%Y-%m-%d")),
        (_word("time", en), when.strftime("%H:%M:%S")),
        (_word("txn", en), record.id),
    ]
    by_code = record.entry_mode.startswith("qr")
    if by_code:
        # Code payments: say so, and show the wallet code or the account masked like a PAN.
        lines.append((_word("payment", en), _word("payment_code", en)))
    if record.masked_pan:
        label = _word("code" if record.entry_mode == "qr_wallet" else "card", en)
        lines.append((label, _pan_for(copy, record.masked_pan)))
    if record.brand:
        lines.append((_word("app", en), record.brand))
    if record.aid:
        lines.append(("AID", record.aid))
    entry = _word(f"entry_{record.entry_mode}", en) or record.entry_mode.upper()
    lines.append((_word("entry", en), entry))
    if approved:
        if record.kind == "sale" and record.state == "approved_offline":
            lines.append((_word("auth_code", en), _word("offline", en)))
        elif record.auth_code:
            lines.append((_word("auth_code", en), record.auth_code))
    lines += _emv_lines(record)
    if record.host_ref:
        lines.append((_word("ref", en), record.host_ref))
    order_id = record.qr_order_id if by_code else ""
    if order_id:
        lines.append((_word("order", en), str(order_id)))
    if record.original_id:
        lines.append((_word("original", en), record.original_id))
    lines += _tip_lines(record, en)
    lines.append((_word("amount", en), ("-" if record.kind == "refund" else "") + amount))
    if record.cvm:
        lines.append((_word("cvm", en), _word(f"cvm_{record.cvm}", en) or record.cvm.upper()))
    footer = (
        _word(f"copy_{copy}", en),
        _word("retain", en) if copy == "customer" else "",
    )
    return Receipt(
        copy=copy,
        title=_word(f"title_{record.kind}", en) or str(record.kind).upper(),
        header=header,
        lines=tuple(lines),
        status=status,
        footer=tuple(x for x in footer if x),
        signature_line=approved and record.cvm == "signature" and copy == "merchant",
        signature_label=_word("signature", en),
    )


def _tip_lines(record: TxnRecord, language: str) -> list[tuple[str, str]]:
    """A sale with a tip: the amount before it and the tip, above the total (`amount`)."""
    if record.kind != "sale" or not record.tip_amount:
        return []
    base = format_amount(record.amount - record.tip_amount, record.currency)
    tip = format_amount(record.tip_amount, record.currency)
    return [(_word("subtotal", language), base), (_word("tip", language), tip)]


def _emv_lines(record: TxnRecord) -> list[tuple[str, str]]:
    """The card's EMV data, under their EMV names in every language (what a card's issuer
    and the schemes' dispute desks read)."""
    lines: list[tuple[str, str]] = []
    if record.cryptogram:
        lines.append((record.cryptogram_kind or "AC", record.cryptogram))
    if record.atc:
        lines.append(("ATC", record.atc))
    if record.tvr:
        lines.append(("TVR", record.tvr))
    return lines


def _chinese(record: TxnRecord, params: TerminalParams, copy: Copy, terminal_id: str) -> Receipt:
    """The 签购单: 商户名称, 商户编号, 终端编号, 卡号, 交易类型, 批次号, 凭证号, 日期时间,
    金额, and 持卡人签名 where the card asked for a signature. With no signature the CVM line
    says 免密免签 (the words of China's small-amount contactless rule): an empty signature
    box would ask the customer to sign for nothing."""
    zh = "zh"
    term = params.terminal
    when = datetime.fromisoformat(record.created_at)
    amount = format_amount(record.amount, record.currency)
    approved, status = _status(record, zh, amount)
    by_code = record.entry_mode.startswith("qr")
    lines: list[tuple[str, str]] = [
        (_word("merchant_name", zh), term.merchant_name_location),
        (_word("merchant", zh), term.merchant_identifier),
        (_word("terminal", zh), terminal_id or term.terminal_identifier),
    ]
    if record.masked_pan:
        label = _word("code" if record.entry_mode == "qr_wallet" else "card", zh)
        lines.append((label, _pan_for(copy, record.masked_pan)))
    if record.brand:
        label = _word("wallet" if by_code else "app", zh)
        lines.append((label, brand_text(record.brand, zh)))
    kind = _word(f"kind_{record.kind}", zh) or str(record.kind)
    lines += [
        (_word("kind", zh), kind),
        (_word("batch", zh), record.batch_id or _word("batch_open", zh)),
        (_word("voucher", zh), record.id),
        (_word("datetime", zh), when.strftime("%Y-%m-%d %H:%M:%S")),
    ]
    entry = _word(f"entry_{record.entry_mode}", zh) or record.entry_mode
    lines.append((_word("entry", zh), entry))
    if approved:
        if record.kind == "sale" and record.state == "approved_offline":
            lines.append((_word("auth_code", zh), _word("offline", zh)))
        elif record.auth_code:
            lines.append((_word("auth_code", zh), record.auth_code))
    if record.host_ref:
        lines.append((_word("ref", zh), record.host_ref))
    order_id = record.qr_order_id if by_code else ""
    if order_id:
        lines.append((_word("order", zh), str(order_id)))
    if record.original_id:
        lines.append((_word("original", zh), record.original_id))
    if record.aid:
        lines.append(("AID", record.aid))
    lines += _emv_lines(record)
    lines += _tip_lines(record, zh)
    lines.append((_word("amount", zh), ("-" if record.kind == "refund" else "") + amount))
    if record.cvm:
        lines.append((_word("cvm", zh), _word(f"cvm_{record.cvm}", zh) or record.cvm))
    footer = (
        _word(f"copy_{copy}", zh),
        _word("retain", zh) if copy == "customer" else "",
    )
    return Receipt(
        copy=copy,
        title=_word("title", zh),
        header=(),
        lines=tuple(lines),
        status=status,
        footer=tuple(x for x in footer if x),
        signature_line=approved and record.cvm == "signature" and copy == "merchant",
        signature_label=_word("signature", zh),
        signature_note=_word("agree", zh),
        language=zh,
    )


# --- the end-of-day report ---------------------------------------------------------------


def _row(label: str, count: str, amount: str, width: int) -> list[str]:
    """One line of the report: the label, a count after it, the amount at the right edge
    (two lines when they do not fit: the label, then the rest right-aligned)."""
    left = f"{label} {count}" if count else label
    if _cells(left) + _cells(amount) + 1 <= width:
        return [left + _rjust(amount, width - _cells(left))]
    return [left, _rjust(amount, width)] if amount else _wrap_words(left, width)


def _when(moment: str) -> str:
    try:
        return datetime.fromisoformat(moment).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return moment


def _alpha(code: int) -> str:
    """A currency's alphabetic code (EUR), or its number when the table lacks it."""
    try:
        return currency(code).alpha
    except UnknownCurrencyError:
        return f"{code:03d}"


def _report_word(key: str, language: str, **fields: object) -> str:
    return receipt_text(key, language).format(**fields)


def _totals_rows(
    totals: Mapping[str, Any], language: str, width: int, *, bank: bool = False
) -> list[str]:
    """Sales, refunds and net of a line or a grand total, under the report's words."""
    out: list[str] = []
    prefix = _report_word("bank", language) + " " if bank else ""
    out += _row(
        prefix + _report_word("sales", language),
        str(totals["sales_count"]),
        str(totals["sales_amount_text"]),
        width,
    )
    out += _row(
        prefix + _report_word("refunds", language),
        str(totals["refunds_count"]),
        str(totals["refunds_amount_text"]),
        width,
    )
    out += _row(prefix + _report_word("net", language), "", str(totals["net_amount_text"]), width)
    return out


def report_text_lines(report: Mapping[str, Any], width: int = WIDTH) -> list[str]:
    """The end-of-day report (a 结算单 in Chinese) as the lines of a slip `width` columns
    wide, in the report's language: per payment method the terminal's sales, refunds and
    net with the bank's beside them (or that the bank has no such line) and a mark where
    they differ; the grand totals of both; the counts; the offline payments sent and still
    waiting. A report of an earlier version (`legacy`) shows the bank's totals it kept."""
    lang = str(report.get("language") or "en")
    rule = "-" * width
    merchant = report.get("merchant") or {}
    out: list[str] = []
    name, _, place = str(merchant.get("name_location", "")).partition(",")
    out += [_center(x.strip(), width) for x in (name, place) if x.strip()]
    out += ["", _center(_report_word("report_title", lang), width), ""]
    if merchant.get("identifier"):
        out += _row(_report_word("merchant", lang), "", str(merchant["identifier"]), width)
    if report.get("terminal_id"):
        out += _row(_report_word("terminal", lang), "", str(report["terminal_id"]), width)
    out += _row(_report_word("batch", lang), "", str(report["batch_id"]), width)
    out += _row(_report_word("closed", lang), "", _when(str(report["closed_at"])), width)
    if report.get("legacy"):
        out += [rule, *_wrap_words(_report_word("report_legacy", lang), width)]
        for line in report.get("host_lines", []):
            out += [rule, str(line["brand_text"])]
            out += _totals_rows(line, lang, width, bank=True)
        for total in report.get("host_grand_totals", []):
            out += [rule, f"{_report_word('total', lang)} {_alpha(int(total['currency']))}"]
            out += _totals_rows(total, lang, width, bank=True)
        return out
    lines = report.get("lines", [])
    if not lines:
        out += [rule, _center(_report_word("no_transactions", lang), width)]
    for line in lines:
        method = _report_word(f"method_{line['method']}", lang)
        out += [
            rule,
            f"{line['brand_text']} ({method})"
            if lang == "en"
            else f"{line['brand_text']}（{method}）",
        ]
        out += _totals_rows(line, lang, width)
        host = line.get("host")
        if host is None:
            out += _wrap_words(_report_word("bank_none", lang), width)
        elif line.get("differs"):
            out += _totals_rows(host, lang, width, bank=True)  # the bank's side, in full
        else:
            out += _row(_report_word("bank", lang), "", str(host["net_amount_text"]), width)
        if line.get("differs"):
            out += _wrap_words("! " + _report_word("differs", lang), width)
    host_totals = {int(t["currency"]): t for t in report.get("host_grand_totals", [])}
    for total in report.get("grand_totals", []):
        out += [rule, f"{_report_word('total', lang)} {_alpha(int(total['currency']))}"]
        out += _totals_rows(total, lang, width)
        theirs = host_totals.pop(int(total["currency"]), None)
        if theirs is not None:
            out += _row(_report_word("bank", lang), "", str(theirs["net_amount_text"]), width)
    for theirs in host_totals.values():  # a currency only the bank has
        out += [rule, f"{_report_word('total', lang)} {_alpha(int(theirs['currency']))}"]
        out += _totals_rows(theirs, lang, width, bank=True)
    out.append(rule)
    out += _row(
        _report_word("count", lang),
        "",
        f"{report.get('transactions', 0)} / {_report_word('bank', lang)} "
        f"{report.get('host_transactions', 0)}",
        width,
    )
    if report.get("in_balance"):
        out += _wrap_words(_report_word("in_balance", lang), width)
    else:
        out += _wrap_words(
            _report_word("out_of_balance", lang, count=report.get("differences", 0)), width
        )
    synced = report.get("offline_synced") or {}
    sent = sum(int(synced.get(k, 0)) for k in ("accepted", "declined", "failed"))
    if sent:
        out += _row(_report_word("offline_synced", lang), "", str(sent), width)
    waiting = report.get("still_offline") or {}
    if waiting.get("count"):
        out += _row(
            _report_word("still_offline", lang),
            str(waiting["count"]),
            str(waiting.get("amount_text", "")),
            width,
        )
    return out


def report_html(report: Mapping[str, Any]) -> str:
    """The end-of-day report as an HTML fragment (the page shows it; the same words and
    numbers as :func:`report_text_lines`): a table of the lines, terminal beside bank."""
    lang = str(report.get("language") or "en")

    def word(key: str, **fields: object) -> str:
        return html.escape(_report_word(key, lang, **fields))

    def cell(value: object) -> str:
        return f"<td>{html.escape(str(value))}</td>"

    head = (
        f"<tr><th></th><th>{word('sales')}</th><th>{word('refunds')}</th>"
        f"<th>{word('net')}</th><th>{word('bank')}</th></tr>"
    )
    rows: list[str] = []
    if report.get("legacy"):
        for line in report.get("host_lines", []):
            rows.append(
                f"<tr><th>{html.escape(str(line['brand_text']))}</th>"
                + cell("")
                + cell("")
                + cell("")
                + cell(line["net_amount_text"])
                + "</tr>"
            )
    for line in report.get("lines", []):
        host = line.get("host")
        bank = word("bank_none") if host is None else html.escape(str(host["net_amount_text"]))
        mark = ' class="differs"' if line.get("differs") else ""
        method = _report_word(f"method_{line['method']}", lang)
        rows.append(
            f"<tr{mark}><th>{html.escape(str(line['brand_text']))} "
            f"<small>{html.escape(method)}</small></th>"
            + cell(f"{line['sales_count']} · {line['sales_amount_text']}")
            + cell(f"{line['refunds_count']} · {line['refunds_amount_text']}")
            + cell(line["net_amount_text"])
            + f"<td>{bank}</td></tr>"
        )
    host_totals = {int(t["currency"]): t for t in report.get("host_grand_totals", [])}
    for total in report.get("grand_totals", []):
        theirs = host_totals.get(int(total["currency"]))
        rows.append(
            f'<tr class="total"><th>{word("total")}</th>'
            + cell(f"{total['sales_count']} · {total['sales_amount_text']}")
            + cell(f"{total['refunds_count']} · {total['refunds_amount_text']}")
            + cell(total["net_amount_text"])
            + cell("" if theirs is None else theirs["net_amount_text"])
            + "</tr>"
        )
    if report.get("legacy"):
        balance = word("report_legacy")
    elif report.get("in_balance"):
        balance = word("in_balance")
    else:
        balance = word("out_of_balance", count=report.get("differences", 0))
    lang_attr = "" if lang == "en" else f' lang="{html.escape(lang)}"'
    return (
        f'<div class="report" data-batch="{html.escape(str(report["batch_id"]))}"{lang_attr}>'
        f'<h3 class="r-title">{word("report_title")}</h3>'
        f"<div>{word('batch')} {html.escape(str(report['batch_id']))}</div>"
        f"<div>{word('closed')} {html.escape(_when(str(report['closed_at'])))}</div>"
        f'<table class="r-lines">{head}{"".join(rows)}</table>'
        f'<div class="r-status">{balance}</div></div>'
    )


@dataclass(frozen=True, slots=True)
class BatchReport:
    """A closed batch's report as the printer takes it (:func:`print_receipt`): the text
    stored with the batch, word for word as the merchant saw it at the end of day."""

    lines: tuple[str, ...]

    @property
    def header(self) -> tuple[str, ...]:
        return ()

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


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


class Printable(Protocol):
    """What the printer prints: header lines (bold, centred) and the text after them."""

    @property
    def header(self) -> tuple[str, ...]: ...

    def text(self) -> str: ...


def print_receipt(printer_url: str, receipts: Sequence[Printable]) -> bytes | None:
    """Print the receipts (or a batch's report), each followed by a cut. Returns the bytes
    for a dummy: printer."""
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
