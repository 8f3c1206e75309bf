"""The acquirer client: signed JSON over HTTP(S) to the acquirer host (docs/protocol.md).

Every request is signed by the terminal key and carries a fresh sequence number; every
money-moving request carries an Idempotency-Key, so re-sending it can never move money twice.

Failures are told apart because they mean different things at the counter:

* :class:`HostUnreachable` - the request never reached the host (connect failed or timed
  out). Nothing happened; safe to retry or to take the payment offline.
* a lost or unreadable response to an **authorisation** - ambiguous: the host may have
  approved. The client reverses it automatically (retrying until the host acknowledges)
  and returns ``Authorisation(outcome=REVERSED_AFTER_LOST_RESPONSE)``; if the host never
  acknowledges, :class:`ReversalPendingError` carries the key the caller must persist and retry.
* a lost response to another money-moving request - retried with the same Idempotency-Key;
  if still unknown, :class:`OutcomeUnknownError` carries that key for a later retry.
* :class:`HostRejectedError` - the host answered 4xx with a reason (bad signature, not found...).
  A signed ``409 stale_sequence`` is not passed on: it carries the host's last accepted
  sequence number, the counter jumps past it and the request is sent once more (same
  Idempotency-Key), so a ``sequence.json`` restored from an older copy mends itself.
* :class:`HostKeyMismatchError` - at enrolment, the host key answered is not the pinned one
  (a man in the middle, or the wrong host): nothing is stored.

Exceptions are faults; outcomes (approved, declined, reversed) are values.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import httpx

from emv.pan import mask_pan

from ..domain.errors import TerminalError
from ..domain.signing import (
    Signer,
    b64decode,
    b64encode,
    key_id_for,
    sign_request,
    verify_response,
    verify_signature,
)
from ..store.keys import Keystore, SequenceCounter

Clock = Callable[[], float]
Token = Callable[[int], bytes]
Sleep = Callable[[float], None]

PARAMETERS_FORMAT: Final = "pipos-params-1"
ENROL_PATH: Final = "/v1/enrol"
#: Sequence numbers, like every number in a header, are below 2^63 (docs/protocol.md).
MAX_SEQUENCE: Final = 2**63 - 1
_FINGERPRINT: Final = re.compile(r"ed25519:([0-9A-Fa-f]{64})")


def host_key_fingerprint(public_key: bytes) -> str:
    """The host key's fingerprint as printed next to an activation code and given to
    ``pipos provision --host-key``: ``ed25519:`` + the 64 lower-case hex digits of SHA-256
    over the raw 32-byte Ed25519 public key (its first 16 digits are the key id)."""
    return "ed25519:" + hashlib.sha256(public_key).hexdigest()


def parse_host_key_fingerprint(text: str) -> str:
    """A fingerprint as typed, checked and normalised (hex in lower case)."""
    match = _FINGERPRINT.fullmatch(text.strip())
    if match is None:
        raise AcquirerError(
            f"host key fingerprint {text[:80]!r}: expected ed25519: followed by 64 hex digits "
            "(the fingerprint printed next to the activation code)"
        )
    return "ed25519:" + match.group(1).lower()


# --- exceptions ---------------------------------------------------------------------------


class AcquirerError(TerminalError):
    """Root of the acquirer client's exceptions."""


class HostUnreachable(AcquirerError):  # noqa: N818 - the name is the documented contract
    """The request did not reach the host; nothing was processed. Safe to retry or go offline."""


class HostRejectedError(AcquirerError):
    """The host refused the request (4xx) and said why."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"acquirer rejected the request ({status} {code}): {message}")
        self.status = status
        self.code = code
        self.message = message


class HostFaultError(AcquirerError):
    """The host failed (5xx) or answered with something unusable, for a request that moves
    no money (parameters, status); simply retry later."""


class OutcomeUnknownError(AcquirerError):
    """A money-moving request may or may not have been processed; retry it with the same
    `idempotency_key` (the host answers the first result and never processes it twice)."""

    def __init__(self, message: str, idempotency_key: str) -> None:
        super().__init__(message)
        self.idempotency_key = idempotency_key


class ReversalPendingError(OutcomeUnknownError):
    """An authorisation's response was lost and its reversal is not yet acknowledged.

    Persist `idempotency_key` and call :meth:`AcquirerClient.reverse` with
    ``original_idempotency_key=`` it until acknowledged; the payment must not be treated as
    approved.
    """


class HostKeyMismatchError(AcquirerError):
    """At enrolment the host answered with a key other than the pinned one; nothing stored."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(
            f"enrolment refused: the acquirer answered with host key {actual}, but the pinned "
            f"host key is {expected}. Someone between this terminal and the acquirer may be "
            "intercepting it, or this is not the acquirer that issued the activation code. "
            "Nothing was stored; once the connection is trusted, enrol again with the same "
            "activation code"
        )
        self.expected = expected
        self.actual = actual


class ParametersInvalidError(AcquirerError):
    """Downloaded parameters failed the host signature or consistency checks; not used."""


class NotEnrolledError(AcquirerError):
    """The terminal has no terminal id / host key yet; enrol it first."""


class _AmbiguousError(Exception):
    """Internal: the request may have been processed but no usable answer came back."""


class _StaleSequenceError(Exception):
    """Internal: a signed ``stale_sequence`` refusal naming the host's last accepted number."""

    def __init__(self, last_sequence: int, error: HostRejectedError) -> None:
        super().__init__(str(error))
        self.last_sequence = last_sequence
        self.error = error


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: httpx.Headers
    content: bytes
    seq: int
    terminal_id: str | None


# --- values -------------------------------------------------------------------------------


class AuthOutcome(StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    REVERSED_AFTER_LOST_RESPONSE = "reversed_after_lost_response"


def _emv_json(emv: Mapping[str, bytes]) -> dict[str, str]:
    return {tag.upper(): value.hex().upper() for tag, value in emv.items()}


@dataclass(frozen=True)
class AuthorisationRequest:
    """Online authorisation data. `emv` maps tag (hex) to value, including 9F26 (ARQC)."""

    amount: int
    currency: int
    pan: str = field(repr=False)
    pan_sequence: int | None = None
    expiry: str | None = field(default=None, repr=False)
    brand: str | None = None
    aid: str | None = None
    emv: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    transaction_type: str = "purchase"
    entry_mode: str = "contactless"
    #: "preauth": a hold on the card, captured or released later (docs/protocol.md,
    #: Pre-authorisation); None: a sale, whose request carries no kind (as before holds).
    kind: str | None = None

    @property
    def masked_pan(self) -> str:
        return mask_pan(self.pan)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "amount": self.amount,
            "currency": self.currency,
            "pan": self.pan,
            "transaction_type": self.transaction_type,
            "entry_mode": self.entry_mode,
            "emv": _emv_json(self.emv),
        }
        for name in ("pan_sequence", "expiry", "brand", "aid", "kind"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass(frozen=True)
class Authorisation:
    outcome: AuthOutcome
    idempotency_key: str
    transaction_ref: str | None = None
    response_code: str | None = None
    reason: str = ""
    auth_code: str | None = None
    arc: bytes | None = None  # 8A
    arpc: bytes | None = None  # 91 (method 1: 8 bytes ARPC, sent to the card with the ARC)
    arqc_status: str | None = None
    reversal_status: str | None = None

    @property
    def approved(self) -> bool:
        return self.outcome is AuthOutcome.APPROVED


@dataclass(frozen=True)
class Cancellation:
    """Answer to a reversal or void: status is reversed / voided / already_reversed /
    no_original (never arrived; a late arrival will be refused) / nothing_to_reverse."""

    status: str
    original_ref: str | None
    idempotency_key: str


@dataclass(frozen=True)
class RefundRequest:
    amount: int
    currency: int
    original_ref: str | None = None
    pan: str | None = field(default=None, repr=False)
    brand: str | None = None
    aid: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (
                ("amount", self.amount),
                ("currency", self.currency),
                ("original_ref", self.original_ref),
                ("pan", self.pan),
                ("brand", self.brand),
                ("aid", self.aid),
            )
            if v is not None
        }


@dataclass(frozen=True)
class RefundResult:
    status: str
    transaction_ref: str
    original_ref: str | None
    idempotency_key: str


@dataclass(frozen=True)
class HoldChange:
    """The host's answer to an increment, capture or release of a pre-authorisation: what
    the change did (`status` approved or declined, its own reference) and the hold after it
    (held in total, captured, released; `hold_status` open, captured, released)."""

    status: str
    transaction_ref: str | None
    preauth_ref: str
    amount: int
    authorised_amount: int
    captured_amount: int
    released_amount: int
    hold_status: str
    idempotency_key: str
    response_code: str | None = None
    reason: str = ""

    @property
    def approved(self) -> bool:
        return self.status == "approved"


#: A host reference as it may stand in a path (the host's own references are of this shape).
_PATH_REF: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class OfflineItem:
    """A payment approved offline (TC in emv["9F26"]), uploaded later in a batch."""

    offline_id: str
    amount: int
    currency: int
    pan: str = field(repr=False)
    pan_sequence: int | None = None
    expiry: str | None = field(default=None, repr=False)
    brand: str | None = None
    aid: str | None = None
    emv: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    captured_at: int | None = None
    #: The terminal's canonical record of the payment, its Ed25519 signature and the key id
    #: that made it (terminal.checkout.core): the host checks both against the item.
    signed_record: bytes = field(default=b"", repr=False)
    signature: bytes = field(default=b"", repr=False)
    key_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "offline_id": self.offline_id,
            "amount": self.amount,
            "currency": self.currency,
            "pan": self.pan,
            "emv": _emv_json(self.emv),
        }
        for name in ("pan_sequence", "expiry", "brand", "aid", "captured_at", "key_id"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.signed_record:
            out["signed_record"] = b64encode(self.signed_record)
        if self.signature:
            out["signature"] = b64encode(self.signature)
        return out


@dataclass(frozen=True)
class BatchItemResult:
    offline_id: str
    result: str  # approved / declined / duplicate / refused
    transaction_ref: str | None  # None for a refused item (the host booked nothing)
    status: str
    response_code: str | None = None
    #: Why a refused item was refused (unsigned_record, bad_record_signature,
    #: unknown_signing_key, record_mismatch), with the host's explanation.
    reason_code: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class BatchUploadResult:
    items: tuple[BatchItemResult, ...]
    idempotency_key: str


@dataclass(frozen=True)
class TransactionStatus:
    transaction_ref: str | None
    status: str
    kind: str | None = None
    amount: int | None = None
    currency: int | None = None
    brand: str | None = None
    masked_pan: str | None = None
    response_code: str | None = None
    auth_code: str | None = None
    batch_id: str | None = None
    original_ref: str | None = None
    #: A pre-authorisation's hold: held in total, captured, released (None for the rest).
    authorised_amount: int | None = None
    captured_amount: int | None = None
    released_amount: int | None = None


@dataclass(frozen=True)
class BrandTotals:
    brand: str
    currency: int
    sales_count: int
    sales_amount: int
    refunds_count: int
    refunds_amount: int
    net_amount: int

    def to_json(self) -> dict[str, Any]:
        return {
            "brand": self.brand,
            "currency": self.currency,
            "sales_count": self.sales_count,
            "sales_amount": self.sales_amount,
            "refunds_count": self.refunds_count,
            "refunds_amount": self.refunds_amount,
            "net_amount": self.net_amount,
        }


@dataclass(frozen=True)
class Settlement:
    batch_id: str
    closed_at: int
    transaction_count: int
    totals: tuple[BrandTotals, ...]
    in_balance: bool | None
    idempotency_key: str


@dataclass(frozen=True)
class TerminalKey:
    """A key the acquirer enrolled for a terminal of this terminal's merchant, as it
    answered ``POST /v1/terminal-keys`` (signed, like every answer)."""

    key_id: str
    terminal_id: str
    public_key: bytes = field(repr=False)
    retired_at: int | None = None


#: How many key ids one ``POST /v1/terminal-keys`` may ask about (docs/protocol.md).
MAX_KEY_IDS: Final = 100


@dataclass(frozen=True)
class Enrolment:
    terminal_id: str
    merchant_id: str
    host_key_id: str
    host_public_key: bytes = field(repr=False)


@dataclass(frozen=True)
class Parameters:
    """Host-signed parameters, verified. Persist `raw` + `signature` and re-verify on load."""

    version: int
    terminal_id: str
    merchant_id: str | None
    issued_at: int
    document: Mapping[str, Any] = field(repr=False)
    raw: bytes = field(repr=False)
    signature: bytes = field(repr=False)


def verify_parameters(
    raw: bytes,
    signature: bytes,
    *,
    host_public_key: bytes,
    terminal_id: str,
    min_version: int | None = None,
) -> Parameters:
    """Check the host's Ed25519 signature over the exact document bytes, then its contents."""
    if not verify_signature(host_public_key, signature, raw):
        raise ParametersInvalidError("parameters: host signature does not verify; not using them")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ParametersInvalidError("parameters: signed document is not JSON") from exc
    if not isinstance(doc, dict) or doc.get("format") != PARAMETERS_FORMAT:
        raise ParametersInvalidError(f"parameters: expected format {PARAMETERS_FORMAT}")
    if doc.get("terminal_id") != terminal_id:
        raise ParametersInvalidError("parameters: issued for another terminal")
    version = doc.get("version")
    if not isinstance(version, int):
        raise ParametersInvalidError("parameters: version missing")
    if min_version is not None and version < min_version:
        raise ParametersInvalidError(f"parameters: version {version} is older than {min_version}")
    issued_at = doc.get("issued_at", 0)
    if not isinstance(issued_at, int):
        raise ParametersInvalidError("parameters: issued_at is not a whole number")
    return Parameters(
        version=version,
        terminal_id=terminal_id,
        merchant_id=doc.get("merchant_id"),
        issued_at=issued_at,
        document=doc,
        raw=raw,
        signature=signature,
    )


@dataclass(frozen=True)
class TlsOptions:
    """`ca_file` pins the trust anchors to that CA only; client cert/key enable mutual TLS."""

    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.client_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


# --- the client ---------------------------------------------------------------------------


def reverse_lost_authorisation(
    reverse_until_acknowledged: Callable[..., Cancellation], key: str
) -> Authorisation:
    """An authorisation whose answer is unknown, reversed before the terminal does anything
    else (EMV/acquirer practice: no approval without a response), whichever link carried
    it. A refused reversal (clock out of the host's window, rate limit...) leaves it
    possibly approved: ReversalPendingError, and the caller keeps retrying the reversal."""
    try:
        cancellation = reverse_until_acknowledged(key, reason="lost_response")
    except ReversalPendingError:
        raise
    except AcquirerError as exc:
        raise ReversalPendingError(f"reversal not accepted yet ({exc})", key) from exc
    return Authorisation(
        outcome=AuthOutcome.REVERSED_AFTER_LOST_RESPONSE,
        idempotency_key=key,
        transaction_ref=cancellation.original_ref,
        reason="response lost; reversed",
        reversal_status=cancellation.status,
    )


class AcquirerClient:
    """One terminal's connection to its acquirer. Thread-safe: requests are serialised so
    that sequence numbers reach the host in increasing order."""

    def __init__(
        self,
        base_url: str,
        keystore: Keystore,
        sequence: SequenceCounter,
        *,
        tls: TlsOptions | None = None,
        host_public_key: bytes | None = None,
        connect_timeout: float = 3.0,
        read_timeout: float = 15.0,
        clock: Clock = time.time,
        token: Token = os.urandom,
        sleep: Sleep = time.sleep,
        retries: int = 3,
        max_reversal_attempts: int = 20,
        backoff: tuple[float, float] = (0.25, 8.0),
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._keystore = keystore
        self._sequence = sequence
        self._pinned_host_key = host_public_key
        self._clock = clock
        self._token = token
        self._sleep = sleep
        self._retries = max(1, retries)
        self._max_reversal_attempts = max(1, max_reversal_attempts)
        self._backoff = backoff
        self._lock = threading.Lock()
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout)
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            verify=tls.context() if tls else True,
            transport=transport,
            # Shorter than the server's keep-alive so a pooled connection is not reused just
            # as the server closes it (that would look like a lost response).
            limits=httpx.Limits(keepalive_expiry=2.0),
            headers={"User-Agent": "pipos-terminal"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AcquirerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------

    def new_idempotency_key(self, kind: str) -> str:
        return f"{kind}-{self._token(16).hex()}"

    def _host_key(self) -> bytes | None:
        return self._pinned_host_key or self._keystore.host_public_key

    def _exchange(
        self,
        method: str,
        path: str,
        payload: Mapping[str, Any] | None,
        idempotency_key: str | None,
        *,
        signer: Signer | None = None,
        terminal_id: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Sign and send one request. Raises HostUnreachable, HostRejectedError, _AmbiguousError.

        A signed ``stale_sequence`` refusal (the counter is behind the host's, e.g. a
        sequence.json restored from a backup) moves the counter past the host's last
        accepted number and sends the request once more with a fresh number and the same
        Idempotency-Key: the host refused the first before doing anything, so nothing is
        done twice. Only a refusal whose signature verified moves the counter."""
        for attempt in range(2):
            answer = self._send(method, path, payload, idempotency_key, signer, terminal_id, params)
            try:
                return self._decode(answer, self._host_key())
            except _StaleSequenceError as stale:
                if attempt:
                    raise stale.error from None
                self._sequence.advance_past(stale.last_sequence)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self,
        method: str,
        path: str,
        payload: Mapping[str, Any] | None,
        idempotency_key: str | None,
        signer: Signer | None,
        terminal_id: str | None,
        params: Mapping[str, str] | None,
    ) -> _Answer:
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        signer = signer or self._keystore.signer()
        tid = terminal_id if terminal_id is not None else self._keystore.terminal_id
        with self._lock:
            request = self._http.build_request(
                method,
                path,
                content=body if payload is not None else None,
                params=params,
                headers={"Content-Type": "application/json"} if payload is not None else None,
            )
            seq = self._sequence.next()
            headers = sign_request(
                signer,
                method=method,
                path=request.url.raw_path.decode("ascii"),
                terminal_id=tid,
                seq=seq,
                timestamp=int(self._clock()),
                idempotency_key=idempotency_key,
                body=body,
            )
            request.headers.update(headers)
            try:
                response = self._http.send(request)
                content = response.read()
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                raise HostUnreachable(f"acquirer unreachable: {exc}") from exc
            except httpx.UnsupportedProtocol as exc:
                raise HostFaultError(f"acquirer URL not usable: {exc}") from exc
            except httpx.TransportError as exc:
                if _tls_refused(exc):
                    # A TLS alert (e.g. TLS 1.3 "certificate required") comes before any HTTP
                    # request is read, so nothing was processed.
                    raise HostUnreachable(f"acquirer refused the TLS session: {exc}") from exc
                raise _AmbiguousError(f"no response from acquirer: {type(exc).__name__}") from exc
        return _Answer(response.status_code, response.headers, content, seq, tid)

    @staticmethod
    def _verified(answer: _Answer, host_key: bytes) -> bool:
        return verify_response(
            host_key,
            answer.headers,
            terminal_id=answer.terminal_id,
            seq=answer.seq,
            status=answer.status,
            body=answer.content,
        )

    def _decode(self, answer: _Answer, host_key: bytes | None) -> tuple[int, dict[str, Any]]:
        status = answer.status
        if status >= 500:
            raise _AmbiguousError(f"acquirer failed with HTTP {status}")
        verified = host_key is not None and self._verified(answer, host_key)
        if host_key is not None and not verified:
            raise _AmbiguousError("acquirer response signature missing or invalid")
        data = _json_object(answer.content)
        if status >= 400:
            err = data.get("error")
            if not isinstance(err, dict):
                err = {}
            error = HostRejectedError(
                status, str(err.get("code", "error")), str(err.get("message", ""))
            )
            last = err.get("last_sequence")
            if (
                verified
                and status == 409
                and error.code == "stale_sequence"
                and isinstance(last, int)
                and not isinstance(last, bool)
                and 0 <= last < MAX_SEQUENCE
            ):
                raise _StaleSequenceError(last, error)
            raise error
        return status, data

    def signed_request(
        self,
        method: str,
        path: str,
        payload: Mapping[str, Any] | None,
        *,
        idempotency_key: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """One signed request on this client's connection and sequence counter, for endpoint
        families with their own client (code payments:
        terminal.acquirer.qr_client.AcquirerTransport),
        so every request of the terminal shares one sequence. Raises HostUnreachable,
        HostRejectedError (4xx, with the host's code) or OutcomeUnknownError (no usable answer;
        the request may have been processed)."""
        try:
            return self._exchange(method, path, payload, idempotency_key)
        except _AmbiguousError as exc:
            raise OutcomeUnknownError(str(exc), idempotency_key or "") from exc

    def _backoff_sleep(self, attempt: int) -> None:
        base, cap = self._backoff
        self._sleep(min(cap, base * (2**attempt)))

    def _plain(
        self, method: str, path: str, payload: Mapping[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        """A request that moves no money: ambiguity is just a host fault."""
        try:
            return self._exchange(method, path, payload, None, **kw)[1]
        except _AmbiguousError as exc:
            raise HostFaultError(str(exc)) from exc

    def _money(self, path: str, payload: Mapping[str, Any], key: str) -> dict[str, Any]:
        """A money-moving request, retried with the same Idempotency-Key."""
        ambiguous: _AmbiguousError | None = None
        unreachable: HostUnreachable | None = None
        for attempt in range(self._retries):
            if attempt:
                self._backoff_sleep(attempt - 1)
            try:
                return self._exchange("POST", path, payload, key)[1]
            except HostUnreachable as exc:
                unreachable = exc
            except _AmbiguousError as exc:
                ambiguous = exc
        if ambiguous is None and unreachable is not None:
            raise unreachable
        raise OutcomeUnknownError(
            f"no answer from acquirer for {path} after {self._retries} attempts ({ambiguous}); "
            f"retry with the same idempotency key",
            key,
        )

    def _require_enrolled(self) -> str:
        tid = self._keystore.terminal_id
        if tid is None or self._host_key() is None:
            raise NotEnrolledError("terminal is not enrolled with an acquirer")
        return tid

    # --- operations -----------------------------------------------------------------------

    def enrol(self, activation_code: str, *, host_key: str | None = None) -> Enrolment:
        """Register this terminal's public key with a one-time activation code.

        `host_key` pins the host: its fingerprint (:func:`host_key_fingerprint`, printed next
        to the activation code). The answer must be signed by the key it carries, and that
        key must be the pinned one (or the `host_public_key` this client was built with);
        otherwise :class:`HostKeyMismatchError` and nothing is stored. Without a pin the
        first key seen is trusted: only for a host the caller already trusts by other means
        (its TLS CA pinned, or a simulator in this process)."""
        ks = self._keystore
        pinned = None if host_key is None else parse_host_key_fingerprint(host_key)
        payload = {
            "activation_code": activation_code,
            "public_key": b64encode(ks.public_key),
            "serial": ks.serial,
        }
        try:
            answer = self._send("POST", ENROL_PATH, payload, None, None, "-", None)
            if self._pinned_host_key is not None:
                _, data = self._decode(answer, self._pinned_host_key)
            else:
                data = self._enrolment_answer(answer)
        except _AmbiguousError as exc:
            raise HostFaultError(f"enrolment: {exc}; retrying with the same code is safe") from exc
        host_public = b64decode(str(data.get("host_public_key", "")), "host public key")
        if len(host_public) != 32:
            raise HostFaultError("enrolment: the host public key is not 32 bytes")
        # The same check whichever pin was given, before anything is stored.
        actual = host_key_fingerprint(host_public)
        if self._pinned_host_key is not None:
            expected = host_key_fingerprint(self._pinned_host_key)
            if actual != expected:
                raise HostKeyMismatchError(expected, actual)
        if pinned is not None and actual != pinned:
            raise HostKeyMismatchError(pinned, actual)
        with _reading("enrolment"):
            enrolment = Enrolment(
                terminal_id=str(data["terminal_id"]),
                merchant_id=str(data["merchant_id"]),
                host_key_id=str(data["host_key_id"]),
                host_public_key=host_public,
            )
        if enrolment.host_key_id != key_id_for(host_public):
            raise HostFaultError("enrolment: host_key_id does not name the host public key")
        ks.set_enrolment(
            terminal_id=enrolment.terminal_id,
            merchant_id=enrolment.merchant_id,
            host_public_key=host_public,
            host_key_id=enrolment.host_key_id,
        )
        return enrolment

    def _enrolment_answer(self, answer: _Answer) -> dict[str, Any]:
        """The enrolment answer when no host key is known yet: it must be signed by the key
        it carries (the caller then compares that key with its pin). A refusal cannot be
        verified before a key is known, and is reported as the host's refusal."""
        if answer.status >= 500:
            raise _AmbiguousError(f"acquirer failed with HTTP {answer.status}")
        data = _json_object(answer.content)
        if answer.status >= 400:
            return self._decode(answer, None)[1]
        try:
            key = b64decode(str(data["host_public_key"]), "host public key")
        except (KeyError, TerminalError) as exc:
            raise _AmbiguousError("enrolment answer carries no usable host public key") from exc
        if not self._verified(answer, key):
            raise _AmbiguousError("enrolment answer is not signed by the host key it carries")
        return data

    def whoami(self, *, signer: Signer | None = None) -> dict[str, Any]:
        self._require_enrolled()
        return self._plain("GET", "/v1/terminal", signer=signer)

    def terminal_keys(self, key_ids: Sequence[str]) -> tuple[TerminalKey, ...]:
        """Which of `key_ids` the acquirer enrolled for a terminal of this terminal's merchant
        (current or retired), with their public keys: what an import asks before it believes
        a key a backup declares. A key of another merchant, or one the host never enrolled,
        is simply not in the answer. The answer is the host's, signed; an entry whose key
        id does not name its public key, or that was not asked for, is a host fault."""
        self._require_enrolled()
        wanted = sorted(set(key_ids))
        found: list[TerminalKey] = []
        for start in range(0, len(wanted), MAX_KEY_IDS):
            chunk = wanted[start : start + MAX_KEY_IDS]
            data = self._plain("POST", "/v1/terminal-keys", {"key_ids": chunk})
            with _reading("terminal keys"):
                for entry in data["keys"]:
                    try:
                        public_key = b64decode(str(entry["public_key"]), "terminal public key")
                    except TerminalError as exc:
                        raise HostFaultError(f"terminal keys: {exc}") from exc
                    key = TerminalKey(
                        key_id=str(entry["key_id"]),
                        terminal_id=str(entry["terminal_id"]),
                        public_key=public_key,
                        retired_at=_opt_int(entry.get("retired_at")),
                    )
                    if key.key_id not in chunk or key_id_for(key.public_key) != key.key_id:
                        raise HostFaultError(
                            f"terminal keys: the acquirer answered key {key.key_id[:40]} with a "
                            "public key it does not name, or one not asked for"
                        )
                    found.append(key)
        return tuple(found)

    def rotate_key(self) -> str:
        """Rotate the terminal key with the host; returns the new key id.

        Two-phase: the new key is persisted (pending) before the host is told, and made
        current only once the host accepted it, so a lost answer is recovered on retry.
        """
        tid = self._require_enrolled()
        ks = self._keystore
        had_pending = ks.pending_signer() is not None
        pending = ks.begin_rotation()
        if had_pending and self._host_accepts(pending):
            return ks.commit_rotation()
        current = ks.signer()
        statement = "\n".join(["PIPOS-ROTATE-V1", tid, current.key_id, pending.key_id])
        payload = {
            "new_public_key": b64encode(pending.public_key),
            "proof": b64encode(pending.sign(statement.encode())),
        }
        try:
            self._exchange("POST", "/v1/keys/rotate", payload, "rotate-" + pending.key_id[8:])
        except _AmbiguousError as exc:
            if self._host_accepts(pending):
                return ks.commit_rotation()
            raise OutcomeUnknownError(
                f"key rotation: {exc}", "rotate-" + pending.key_id[8:]
            ) from exc
        return ks.commit_rotation()

    def _host_accepts(self, signer: Signer) -> bool:
        try:
            self.whoami(signer=signer)
        except (HostRejectedError, HostFaultError):
            return False
        return True

    def download_parameters(self, *, min_version: int | None = None) -> Parameters:
        """Fetch parameters and verify the host's signature before returning them."""
        tid = self._require_enrolled()
        data = self._plain("GET", "/v1/parameters")
        host_key = self._host_key()
        assert host_key is not None
        try:
            raw = str(data["document"]).encode("utf-8")
            signature = b64decode(str(data["signature"]), "parameters signature")
        except (KeyError, TerminalError) as exc:
            raise ParametersInvalidError(
                "parameters: response lacks document or signature"
            ) from exc
        return verify_parameters(
            raw, signature, host_public_key=host_key, terminal_id=tid, min_version=min_version
        )

    def authorise(
        self, request: AuthorisationRequest, *, idempotency_key: str | None = None
    ) -> Authorisation:
        """Online authorisation. Persist `idempotency_key` first if you may need to recover
        after a crash; a lost response is reversed before this returns."""
        self._require_enrolled()
        key = idempotency_key or self.new_idempotency_key("auth")
        try:
            _, data = self._exchange("POST", "/v1/authorisations", request.to_json(), key)
            return _authorisation(data, key)
        except _AmbiguousError:
            return reverse_lost_authorisation(self.reverse_until_acknowledged, key)

    def reverse_until_acknowledged(
        self, original_idempotency_key: str, *, reason: str
    ) -> Cancellation:
        """Send the reversal until the host acknowledges it (bounded; then ReversalPendingError)."""
        last: Exception | None = None
        for attempt in range(self._max_reversal_attempts):
            if attempt:
                self._backoff_sleep(attempt - 1)
            try:
                return self._cancel(
                    "/v1/reversals",
                    {"original_idempotency_key": original_idempotency_key, "reason": reason},
                    "rev-" + original_idempotency_key,
                )
            except (HostUnreachable, _AmbiguousError) as exc:
                last = exc
        raise ReversalPendingError(
            f"reversal not acknowledged after {self._max_reversal_attempts} attempts ({last})",
            original_idempotency_key,
        )

    def _cancel(self, path: str, payload: Mapping[str, Any], key: str) -> Cancellation:
        _, data = self._exchange("POST", path, payload, key)
        if not isinstance(data.get("status"), str):
            raise _AmbiguousError("acquirer response to the reversal has no status")
        return Cancellation(
            status=str(data["status"]),
            original_ref=_opt_str(data.get("original_ref")),
            idempotency_key=key,
        )

    def reverse(
        self,
        *,
        original_idempotency_key: str | None = None,
        original_ref: str | None = None,
        reason: str = "merchant",
    ) -> Cancellation:
        """Reverse an authorisation by its Idempotency-Key or its host reference."""
        self._require_enrolled()
        if original_idempotency_key:
            payload: dict[str, Any] = {"original_idempotency_key": original_idempotency_key}
            key = "rev-" + original_idempotency_key
        elif original_ref:
            payload = {"original_ref": original_ref}
            key = "rev-" + original_ref
        else:
            raise AcquirerError("reverse: give original_idempotency_key or original_ref")
        payload["reason"] = reason
        data = self._money("/v1/reversals", payload, key)
        with _reading("reversal", key):
            return Cancellation(str(data["status"]), _opt_str(data.get("original_ref")), key)

    def void(self, transaction_ref: str, *, idempotency_key: str | None = None) -> Cancellation:
        """Cancel an approved, not yet settled transaction."""
        self._require_enrolled()
        key = idempotency_key or "void-" + transaction_ref
        data = self._money("/v1/voids", {"original_ref": transaction_ref}, key)
        with _reading("void", key):
            return Cancellation(str(data["status"]), _opt_str(data.get("original_ref")), key)

    def refund(self, request: RefundRequest, *, idempotency_key: str | None = None) -> RefundResult:
        self._require_enrolled()
        key = idempotency_key or self.new_idempotency_key("refund")
        data = self._money("/v1/refunds", request.to_json(), key)
        with _reading("refund", key):
            return RefundResult(
                status=str(data["status"]),
                transaction_ref=str(data["transaction_ref"]),
                original_ref=data.get("original_ref"),
                idempotency_key=key,
            )

    # --- pre-authorisations (the hold itself is authorise() with kind "preauth") ---------

    def increment_hold(
        self, preauth_ref: str, amount: int, currency: int, *, idempotency_key: str
    ) -> HoldChange:
        """Raise an open hold by `amount` (no card: the host holds the card's reference)."""
        return self._hold_change(
            preauth_ref, "increments", {"amount": amount, "currency": currency}, idempotency_key
        )

    def capture_hold(
        self, preauth_ref: str, amount: int, currency: int, *, idempotency_key: str
    ) -> HoldChange:
        """Take `amount` (1 to what is held) of an open hold; the host releases the rest."""
        return self._hold_change(
            preauth_ref, "capture", {"amount": amount, "currency": currency}, idempotency_key
        )

    def release_hold(self, preauth_ref: str, *, idempotency_key: str) -> HoldChange:
        """Give an open hold back whole."""
        return self._hold_change(preauth_ref, "release", {}, idempotency_key)

    def _hold_change(
        self, preauth_ref: str, action: str, payload: Mapping[str, Any], key: str
    ) -> HoldChange:
        """One signed, idempotent change of a hold: retried with the same key; a lost answer
        is OutcomeUnknownError (the caller settles it under that key before the next)."""
        self._require_enrolled()
        if _PATH_REF.fullmatch(preauth_ref) is None:
            raise AcquirerError(f"pre-authorisation reference {preauth_ref[:80]!r} is not valid")
        data = self._money(f"/v1/preauths/{preauth_ref}/{action}", payload, key)
        with _reading(f"pre-authorisation {action}", key):
            return HoldChange(
                status=str(data["status"]),
                transaction_ref=_opt_str(data.get("transaction_ref")),
                preauth_ref=str(data["preauth_ref"]),
                amount=int(data["amount"]),
                authorised_amount=int(data["authorised_amount"]),
                captured_amount=int(data["captured_amount"]),
                released_amount=int(data["released_amount"]),
                hold_status=str(data["hold_status"]),
                idempotency_key=key,
                response_code=_opt_str(data.get("response_code")),
                reason=str(data.get("reason") or ""),
            )

    def upload_offline(
        self, items: Sequence[OfflineItem], *, idempotency_key: str | None = None
    ) -> BatchUploadResult:
        """Upload offline payments; each item is deduplicated by its offline_id too."""
        self._require_enrolled()
        key = idempotency_key or self.new_idempotency_key("batch")
        data = self._money("/v1/batches/offline", {"items": [i.to_json() for i in items]}, key)
        with _reading("offline batch", key):
            return BatchUploadResult(
                items=tuple(
                    BatchItemResult(
                        offline_id=str(r["offline_id"]),
                        result=str(r["result"]),
                        transaction_ref=_opt_str(r.get("transaction_ref")),
                        status=str(r["status"]),
                        response_code=r.get("response_code"),
                        reason_code=_opt_str(r.get("reason_code")),
                        reason=_opt_str(r.get("reason")),
                    )
                    for r in data["items"]
                ),
                idempotency_key=key,
            )

    def status(
        self, *, transaction_ref: str | None = None, idempotency_key: str | None = None
    ) -> TransactionStatus:
        self._require_enrolled()
        if transaction_ref:
            data = self._plain("GET", f"/v1/transactions/{transaction_ref}")
        elif idempotency_key:
            data = self._plain(
                "GET", "/v1/transactions", params={"idempotency_key": idempotency_key}
            )
        else:
            raise AcquirerError("status: give transaction_ref or idempotency_key")
        with _reading("transaction status"):
            return TransactionStatus(
                transaction_ref=data.get("transaction_ref"),
                status=str(data["status"]),
                kind=data.get("kind"),
                amount=data.get("amount"),
                currency=data.get("currency"),
                brand=data.get("brand"),
                masked_pan=data.get("masked_pan"),
                response_code=data.get("response_code"),
                auth_code=data.get("auth_code"),
                batch_id=data.get("batch_id"),
                original_ref=data.get("original_ref"),
                authorised_amount=_opt_int(data.get("authorised_amount")),
                captured_amount=_opt_int(data.get("captured_amount")),
                released_amount=_opt_int(data.get("released_amount")),
            )

    def settle(
        self,
        *,
        terminal_totals: Sequence[BrandTotals] | None = None,
        idempotency_key: str | None = None,
    ) -> Settlement:
        """Close the batch; the host reports totals per brand and currency and, when the
        terminal's own totals are given, whether they agree."""
        self._require_enrolled()
        key = idempotency_key or self.new_idempotency_key("settle")
        payload: dict[str, Any] = {}
        if terminal_totals is not None:
            payload["terminal_totals"] = [t.to_json() for t in terminal_totals]
        data = self._money("/v1/settlement", payload, key)
        with _reading("settlement", key):
            return Settlement(
                batch_id=str(data["batch_id"]),
                closed_at=int(data["closed_at"]),
                transaction_count=int(data["transaction_count"]),
                totals=tuple(
                    BrandTotals(
                        brand=str(t["brand"]),
                        currency=int(t["currency"]),
                        sales_count=int(t["sales_count"]),
                        sales_amount=int(t["sales_amount"]),
                        refunds_count=int(t["refunds_count"]),
                        refunds_amount=int(t["refunds_amount"]),
                        net_amount=int(t["net_amount"]),
                    )
                    for t in data["totals"]
                ),
                in_balance=data.get("in_balance"),
                idempotency_key=key,
            )


def _json_object(content: bytes) -> dict[str, Any]:
    try:
        data = json.loads(content)
    except ValueError as exc:
        raise _AmbiguousError("acquirer response is not JSON") from exc
    if not isinstance(data, dict):
        raise _AmbiguousError("acquirer response is not a JSON object")
    return data


def _tls_refused(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


#: What reading a well-signed response of the wrong shape raises (a host bug, or a host
#: speaking another protocol version): translated at this boundary, never passed on.
_SHAPE_ERRORS: Final = (KeyError, IndexError, TypeError, ValueError, AttributeError)


@contextlib.contextmanager
def _reading(what: str, idempotency_key: str | None = None) -> Iterator[None]:
    """Turn a malformed response into HostFaultError, or for a money-moving request into
    OutcomeUnknownError (it was processed, but what the host decided cannot be read)."""
    try:
        yield
    except _SHAPE_ERRORS as exc:
        if isinstance(exc, TerminalError):
            raise
        message = f"{what}: acquirer response is malformed ({type(exc).__name__}: {exc})"
        if idempotency_key is None:
            raise HostFaultError(message) from exc
        raise OutcomeUnknownError(
            message + "; retry with the same idempotency key", idempotency_key
        ) from exc


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected a whole number, got {value!r}")
    return value


def _authorisation(data: Mapping[str, Any], key: str) -> Authorisation:
    """The host's answer; one that cannot be read is a lost response (reversed by caller)."""
    try:
        return _read_authorisation(data, key)
    except _SHAPE_ERRORS as exc:
        raise _AmbiguousError(
            f"authorisation response is malformed ({type(exc).__name__}: {exc})"
        ) from exc


def _read_authorisation(data: Mapping[str, Any], key: str) -> Authorisation:
    arc = data.get("arc")
    arpc = data.get("arpc")
    return Authorisation(
        outcome=AuthOutcome(str(data["outcome"])),
        idempotency_key=key,
        transaction_ref=data.get("transaction_ref"),
        response_code=data.get("response_code"),
        reason=str(data.get("reason", "")),
        auth_code=data.get("auth_code"),
        arc=bytes.fromhex(arc) if arc else None,
        arpc=bytes.fromhex(arpc) if arpc else None,
        arqc_status=data.get("arqc_status"),
    )
