"""The end-of-day report as printed and shown (terminal.domain.receipts): a slip 32
columns wide in the report's language (a 结算单 in Chinese), the bank's side in full and a
mark where a line differs, the bank's totals alone for a batch an earlier version closed;
the same as HTML; printed through the receipt printer's path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from terminal.domain.receipts import (
    WIDTH,
    BatchReport,
    _cells,
    print_receipt,
    report_html,
    report_text_lines,
)


def _amounts(sales: tuple[int, int], refunds: tuple[int, int]) -> dict[str, Any]:
    net = sales[1] - refunds[1]
    return {
        "sales_count": sales[0],
        "sales_amount": sales[1],
        "sales_amount_text": f"{sales[1] / 100:.2f} EUR",
        "refunds_count": refunds[0],
        "refunds_amount": refunds[1],
        "refunds_amount_text": f"{refunds[1] / 100:.2f} EUR",
        "net_amount": net,
        "net_amount_text": f"{net / 100:.2f} EUR",
    }


def _report(language: str) -> dict[str, Any]:
    visa = {
        "brand": "VISA",
        "brand_text": "VISA",
        "method": "card",
        "currency": 978,
        **_amounts((2, 3000), (1, 500)),
        "host": _amounts((2, 3000), (0, 0)),
        "differs": True,
    }
    alipay = {
        "brand": "ALIPAY",
        "brand_text": "支付宝" if language == "zh" else "ALIPAY",
        "method": "code",
        "currency": 978,
        **_amounts((1, 1800), (0, 0)),
        "host": None,
        "differs": True,
    }
    return {
        "batch_id": "B-42",
        "closed_at": "2026-03-01T18:00:00+00:00",
        "language": language,
        "merchant": {"name_location": "PIPOS DEMO SHOP, BERLIN DE", "identifier": "M1"},
        "terminal_id": "T1",
        "lines": [visa, alipay],
        "grand_totals": [{"currency": 978, **_amounts((3, 4800), (1, 500))}],
        "host_grand_totals": [{"currency": 978, **_amounts((2, 3000), (0, 0))}],
        "differences": 2,
        "in_balance": False,
        "transactions": 4,
        "host_transactions": 2,
        "offline_synced": {"accepted": 1},
        "still_offline": {"count": 1, "amount_text": "8.00 EUR"},
    }


def test_a_report_that_differs_from_the_bank_says_where() -> None:
    lines = report_text_lines(_report("en"))
    text = "\n".join(lines)
    assert all(_cells(line) <= WIDTH for line in lines), text
    assert "END OF DAY" in text
    assert "ALIPAY (QR CODE)" in text
    assert "BANK: NO SUCH LINE" in text  # the bank has no Alipay line
    assert "BANK REFUNDS 0" in text  # Visa differs: the bank's side in full
    assert text.count("! DIFFERS FROM THE BANK") == 2
    assert "LINES DIFFERING FROM THE BANK: 2" in text
    assert "TOTAL EUR" in text
    assert "OFFLINE SENT" in text
    assert "STILL OFFLINE 1" in text
    html = report_html(_report("en"))
    assert html.count('class="differs"') == 2
    assert "BANK: NO SUCH LINE" in html


def test_a_chinese_report_is_a_chinese_slip() -> None:
    lines = report_text_lines(_report("zh"))
    text = "\n".join(lines)
    assert all(_cells(line) <= WIDTH for line in lines), text
    for word in (
        "结算单",
        "商户编号",
        "终端编号",
        "批次号",
        "消费",
        "退货",
        "合计",
        "支付宝（扫码）",
    ):
        assert word in text, word
    assert 'lang="zh"' in report_html(_report("zh"))


def test_an_earlier_versions_batch_shows_the_bank_totals_it_kept() -> None:
    legacy = {
        "batch_id": "B-old",
        "closed_at": "2025-01-01T18:00:00+00:00",
        "language": "en",
        "legacy": True,
        "host_lines": [{"brand_text": "VISA", **_amounts((3, 4500), (0, 0))}],
        "host_grand_totals": [{"currency": 978, **_amounts((3, 4500), (0, 0))}],
    }
    text = "\n".join(report_text_lines(legacy))
    assert "BANK TOTALS ONLY (EARLIER VERSION)" in " ".join(text.split())  # wrapped
    assert "BANK SALES 3" in text
    assert "45.00 EUR" in report_html(legacy)


def test_the_report_prints_on_the_receipt_printer(tmp_path: Path) -> None:
    printer = tmp_path / "printer.bin"
    lines = tuple(report_text_lines(_report("en")))
    print_receipt(f"file:{printer}", [BatchReport(lines)])
    raw = printer.read_bytes()
    assert b"END OF DAY" in raw
    assert b"\x1dV" in raw  # cut
