"""Field 39 as the terminal reads it (terminal.acquirer.iso8583.responses): every code the
table knows has its words in every language the terminal speaks, and no words exist for a
code the table does not know; an unknown code is a decline shown with its code."""

from __future__ import annotations

import re

import pytest

from terminal.acquirer.iso8583.messages import APPROVED_CODES
from terminal.acquirer.iso8583.responses import RESPONSES, ResponseOutcome, meaning_of
from terminal.domain.messages import LANGUAGES, RESPONSE_CODES, Result, message_for, response_text


@pytest.mark.parametrize("code", sorted(RESPONSES))
def test_every_code_has_words_in_every_language(code: str) -> None:
    for language in LANGUAGES:
        assert response_text(code, language), (code, language)
    assert not re.search(r"[A-Za-z]{3,}", response_text(code, "zh"))  # Chinese, not English


def test_the_words_and_the_table_name_the_same_codes() -> None:
    assert set(RESPONSES) == RESPONSE_CODES  # one copy of the words, none without a meaning


def test_what_the_issue_names_is_in_the_table() -> None:
    meanings = {code: RESPONSES[code].outcome for code in RESPONSES}
    assert {c for c, o in meanings.items() if o is ResponseOutcome.APPROVED} == APPROVED_CODES
    assert meanings["75"] is meanings["51"] is ResponseOutcome.DECLINED
    assert meanings["94"] is meanings["12"] is meanings["58"] is ResponseOutcome.REFUSED
    assert meanings["63"] is ResponseOutcome.SECURITY
    assert meanings["95"] is ResponseOutcome.OUT_OF_BALANCE
    assert meanings["96"] is ResponseOutcome.HOST_FAULT
    assert response_text("75", "en") == "PIN tries exceeded"
    assert response_text("75", "zh") == "密码错误次数超限"


def test_an_unknown_code_is_a_decline_shown_with_its_code() -> None:
    unknown = meaning_of("7Z")
    assert (unknown.outcome, unknown.result) == (
        ResponseOutcome.DECLINED,
        Result.DECLINED_BY_ISSUER,
    )
    assert unknown.text("en") == "7Z"
    assert message_for(unknown.result, "en", reason="77").merchant == "Declined by the bank (77)"
    assert message_for(unknown.result, "zh", reason="77").merchant == "发卡行拒绝交易（77）"
    known = meaning_of("75")
    assert message_for(known.result, "zh", reason="75").merchant == (
        "发卡行拒绝交易（75 密码错误次数超限）"
    )
