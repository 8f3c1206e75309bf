"""Client side of the acquirer's code-payment endpoints (simulator/host/qr_payments.py).

Requests are signed exactly like every other acquirer request (terminal/domain/signing.py): the
five protocol headers, a fresh sequence number, an idempotency key for anything that moves
money, and the host's response signature checked when its key is pinned. The signing and
sending sit behind :class:`SignedTransport`, so the checkout can hand in the acquirer
client's own transport (one sequence counter per terminal) instead of
:class:`HttpSignedTransport`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from ..domain.errors import TerminalError
from ..domain.signing import Signer, SigningError, sign_request, verify_response
from .client import AcquirerClient, AcquirerError, HostRejectedError


class QrHostError(TerminalError):
    """The code-payment exchange with the acquirer failed."""


class QrNoAnswerError(QrHostError):
    """The acquirer could not be reached or did not answer (the request may have arrived)."""


class QrHostRejectedError(QrHostError):
    """The acquirer refused the request: HTTP status, its stable code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(f"acquirer refused the request ({status} {code}): {message}")


class SignedTransport(Protocol):
    """Send one signed JSON request; return the HTTP status and the decoded JSON body."""

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        idempotency_key: str | None = None,
    ) -> tuple[int, Any]: ...


class HttpSignedTransport:
    """httpx + terminal/domain/signing.py. `next_seq` is the terminal's durable sequence counter."""

    def __init__(
        self,
        base_url: str,
        signer: Signer,
        terminal_id: str,
        next_seq: Callable[[], int],
        clock: Callable[[], float],
        *,
        host_public_key: bytes | None = None,
        timeout: float = 10.0,
        http: httpx.Client | None = None,
    ) -> None:
        self._signer = signer
        self._terminal_id = terminal_id
        self._next_seq = next_seq
        self._clock = clock
        self._host_key = host_public_key
        self._http = http or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        idempotency_key: str | None = None,
    ) -> tuple[int, Any]:
        raw = (
            b""
            if body is None
            else json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        )
        seq = self._next_seq()
        headers = sign_request(
            self._signer,
            method=method,
            path=path,
            terminal_id=self._terminal_id,
            seq=seq,
            timestamp=int(self._clock()),
            idempotency_key=idempotency_key,
            body=raw,
        )
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = self._http.request(method, path, content=raw or None, headers=headers)
        except httpx.HTTPError as exc:
            raise QrNoAnswerError(f"acquirer unreachable: {type(exc).__name__}") from exc
        if self._host_key is not None and not verify_response(
            self._host_key,
            response.headers,
            terminal_id=self._terminal_id,
            seq=seq,
            status=response.status_code,
            body=response.content,
        ):
            raise SigningError("acquirer response signature does not verify")
        try:
            data = response.json()
        except ValueError as exc:
            raise QrNoAnswerError(f"acquirer answered {response.status_code} without JSON") from exc
        return response.status_code, data


class AcquirerTransport:
    """The acquirer client's own signed connection as a :class:`SignedTransport`: code
    payments then share the terminal's single sequence counter and pinned host key."""

    def __init__(self, client: AcquirerClient) -> None:
        self._client = client

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        idempotency_key: str | None = None,
    ) -> tuple[int, Any]:
        try:
            return self._client.signed_request(method, path, body, idempotency_key=idempotency_key)
        except HostRejectedError as exc:
            return exc.status, {"error": {"code": exc.code, "message": exc.message}}
        except AcquirerError as exc:  # unreachable, no usable answer: it may have arrived
            raise QrNoAnswerError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class OrderStatus:
    """The host's view of one code-payment order."""

    order_id: str
    status: str  # paid | failed | pending_confirmation | awaiting_payment | cancelled | reversed
    reason: str
    kind: str
    scheme: str | None = None
    masked_code: str | None = None
    transaction_ref: str | None = None

    @property
    def final(self) -> bool:
        return self.status in ("paid", "failed", "cancelled", "reversed")

    @classmethod
    def from_json(cls, data: Any) -> OrderStatus:
        if not isinstance(data, dict) or "order_id" not in data or "status" not in data:
            raise QrHostError("acquirer answered without an order status")
        return cls(
            order_id=str(data["order_id"]),
            status=str(data["status"]),
            reason=str(data.get("reason") or ""),
            kind=str(data.get("kind") or ""),
            scheme=data.get("scheme"),
            masked_code=data.get("masked_code"),
            transaction_ref=data.get("transaction_ref"),
        )


class QrClient:
    """The code-payment calls; every call returns an :class:`OrderStatus` or raises."""

    def __init__(self, transport: SignedTransport) -> None:
        self._transport = transport

    def _call(
        self, method: str, path: str, body: Mapping[str, Any] | None, key: str | None
    ) -> OrderStatus:
        status, data = self._transport.request(method, path, body, idempotency_key=key)
        if status >= 500:
            raise QrNoAnswerError(f"acquirer failed with HTTP {status}")
        if status >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise QrHostRejectedError(
                status, str(error.get("code", "")), str(error.get("message", ""))
            )
        return OrderStatus.from_json(data)

    def pay_with_wallet_code(
        self, order_id: str, code: str, scheme: str, amount: int, currency: int
    ) -> OrderStatus:
        body = {
            "order_id": order_id,
            "kind": "wallet",
            "code": code,
            "scheme": scheme,
            "amount": amount,
            "currency": currency,
        }
        return self._call("POST", "/v1/qr/payments", body, order_id)

    def pay_with_consumer_code(
        self,
        order_id: str,
        *,
        amount: int,
        currency: int,
        pan: str,
        pan_sequence: int | None,
        expiry: str | None,
        aid: str,
        emv: Mapping[str, str],
        scheme: str = "",
    ) -> OrderStatus:
        body: dict[str, Any] = {
            "order_id": order_id,
            "kind": "cpm",
            "amount": amount,
            "currency": currency,
            "pan": pan,
            "aid": aid,
            "emv": dict(emv),
            "scheme": scheme,
        }
        if pan_sequence is not None:
            body["pan_sequence"] = pan_sequence
        if expiry is not None:
            body["expiry"] = expiry
        return self._call("POST", "/v1/qr/payments", body, order_id)

    def create_merchant_order(self, order_id: str, amount: int, currency: int) -> OrderStatus:
        body = {"order_id": order_id, "amount": amount, "currency": currency}
        return self._call("POST", "/v1/qr/merchant-orders", body, order_id)

    def order_status(self, order_id: str) -> OrderStatus:
        return self._call("GET", f"/v1/qr/orders/{order_id}", None, None)

    def cancel(self, order_id: str, reason: str = "") -> OrderStatus:
        return self._call(
            "POST", f"/v1/qr/orders/{order_id}/cancel", {"reason": reason}, f"{order_id}.cancel"
        )
