"""Every error code the local API can answer (its own, FastAPI's refusals in its shape, and
the checkout's refusals by class) has a label in every language the terminal speaks, so the
page words it (errorText: "error_" + code) instead of showing the server's English text;
and a reason the API itself gives has its own label."""

from __future__ import annotations

import ast
import inspect

import terminal.api.server as server
import terminal.checkout.errors as checkout_errors
from terminal.checkout.errors import CheckoutError
from terminal.domain.messages import LANGUAGES, ui_strings


def _api_codes() -> tuple[set[str], set[tuple[str, str]]]:
    """The codes server.py gives literally (``_ApiError(status, "code", ...)``,
    ``_error(status, "code", ...)``), and (code, reason) of a literal ``{"reason": ...}``."""
    codes: set[str] = set()
    reasons: set[tuple[str, str]] = set()
    tree = ast.parse(inspect.getsource(server))
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if node.func.id not in ("_ApiError", "_error") or len(node.args) < 2:
            continue
        code = node.args[1]
        if not (isinstance(code, ast.Constant) and isinstance(code.value, str)):
            continue
        codes.add(code.value)
        for keyword in node.keywords:
            if keyword.arg == "details" and isinstance(keyword.value, ast.Dict):
                for key, value in zip(keyword.value.keys, keyword.value.values, strict=True):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value == "reason"
                        and isinstance(value, ast.Constant)
                    ):
                        reasons.add((code.value, str(value.value)))
    return codes, reasons


def test_every_api_error_code_has_a_label_in_every_language() -> None:
    codes, reasons = _api_codes()
    codes |= set(server._HTTP_ERROR_CODES.values()) | {"http_error"}
    codes |= {
        cls.code
        for cls in vars(checkout_errors).values()
        if isinstance(cls, type) and issubclass(cls, CheckoutError)
    }
    # The simulator drawer's refusals and the receipts' are among them.
    assert {"simulator_error", "unknown_card", "unreadable_code", "not_paid"} <= codes
    assert ("invalid_state", "not_finished") in reasons
    for language in LANGUAGES:
        strings = ui_strings(language)
        missing = sorted({f"error_{code}" for code in codes} - strings.keys())
        missing += sorted({f"error_{c}_{r}" for c, r in reasons} - strings.keys())
        assert not missing, (language, missing)
