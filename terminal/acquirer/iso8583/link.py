"""The ISO 8583 link: :class:`terminal.acquirer.link.AcquirerLink` over one
:class:`~terminal.acquirer.iso8583.connection.Iso8583Connection` (docs/iso8583.md).

The same values and the same errors as the pipos protocol's client
(terminal.acquirer.client), so the checkout and the offline queue's forwarder use either:

- **Keys**: the terminal master key (TMK) is loaded at provisioning
  (:func:`load_terminal_master_key`, a TR-31 key block under the key-injection facility's
  key); the session MAC and PIN keys come in the 0810 of a key exchange (0800, field 70
  161), as TR-31 blocks under the TMK, and are kept sealed in the keystore
  (``Keystore.set_secrets``), so a restart signs on with them and exchanges no keys. The
  exchange is sent without a MAC when the terminal has no session key (or stopped trusting
  its own after an answer with a wrong MAC, or a 63); its 0810 is checked under the new MAC
  key it carries. Then the sign-on (0800, 001). :meth:`Iso8583Link.keep_alive` sends the
  echo test (0800, 301) on an idle link.
- **Exactly once**: every money message is remembered (terminal.store.link_messages: its
  idempotency key, MTI, STAN, field 7 and its fields, card data sealed) before it is sent.
  A call again under the same key answers from that memory when the host's answer came, or
  repeats the message (0201, 0221, 0401: the same STAN, field 7 and content, the host
  answers its first answer) when it did not.
- **A lost answer** (none in time, a connection cut, a wrong MAC, another STAN):
  ``OutcomeUnknownError``. An authorisation (0200, 0100) is then reversed before the call
  returns: the reversal (0400, or 0420 per the profile) is sent, then repeated (0401) until
  a 0410 comes, as the pipos client reverses (``REVERSED_AFTER_LOST_RESPONSE``, or
  ``ReversalPendingError`` with the key whose reversal the checkout keeps retrying).
- **Response codes** (field 39): terminal.acquirer.iso8583.responses. A decline of a sale
  is a declined :class:`Authorisation`; a refused request (12, 30, 94...), a host fault
  (96) or a security violation (63) is :class:`Iso8583ResponseError` (a
  ``HostRejectedError``: the host answered, nothing was done).
- **Offline upload**: one 0220 advice per payment, in order, field 62 its offline id; an
  answer that is no last word on the payment (91, 96, 63, an unknown code) is not kept,
  and the advice repeated (0221).
- **Settlement**: 0500 with the batch's totals, counted from the memory; on 95 (out of
  balance) every transaction of the batch as a 0320, then the 0500 with processing code
  960000. Each 0500 is remembered: a lost answer is repeated (0501), never a new 0500
  for the same batch, and the batch number is taken once per batch.
- **Status lookup**: ISO 8583 has no message for it: :class:`StatusLookupUnsupportedError`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, cast

import psec.des
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from emv import tlv
from emv.errors import EmvError

from ...store.keys import Keystore
from ...store.link_counters import LinkCounters
from ...store.link_messages import FILE as MEMORY_FILE
from ...store.link_messages import UNSENT, LinkMessages, SentMessage, StoredMessage
from ..client import (
    AcquirerError,
    Authorisation,
    AuthorisationRequest,
    AuthOutcome,
    BatchItemResult,
    BatchUploadResult,
    BrandTotals,
    Cancellation,
    HoldChange,
    HostFaultError,
    HostRejectedError,
    HostUnreachable,
    NotEnrolledError,
    OfflineItem,
    OutcomeUnknownError,
    RefundRequest,
    RefundResult,
    ReversalPendingError,
    Settlement,
    TlsOptions,
    TransactionStatus,
    reverse_lost_authorisation,
)
from .codec import FieldValue, Iso8583Error, MacMismatchError, Message, encode_message
from .connection import DEFAULT_ANSWER_TIMEOUT, Iso8583Connection
from .keys import unwrap_key_block
from .messages import (
    CardData,
    EntryMode,
    OriginalMessage,
    ReconciliationTotals,
    Request,
    Station,
    batch_upload,
    echo_test,
    financial_request,
    key_exchange,
    reconciliation,
    reversal,
    sign_on,
)
from .profile import Iso8583ProfileError, Profile, default_profile
from .responses import RESPONSES, ResponseCode, ResponseOutcome, meaning_of

__all__ = [
    "MEMORY_KEY_PURPOSE",
    "SECRET_MAC_KEY",
    "SECRET_PIN_KEY",
    "SECRET_TMK",
    "Iso8583Link",
    "Iso8583NotRegisteredError",
    "Iso8583RequestError",
    "Iso8583ResponseError",
    "StatusLookupUnsupportedError",
    "load_terminal_master_key",
    "open_memory",
]

log = logging.getLogger(__name__)

#: Where the keystore keeps the link's keys (``Keystore.secret``).
SECRET_TMK: Final = "iso8583/tmk"  # noqa: S105 - a secret's name, not a secret
SECRET_MAC_KEY: Final = "iso8583/mac-key"  # noqa: S105 - a secret's name
SECRET_PIN_KEY: Final = "iso8583/pin-key"  # noqa: S105 - a secret's name
#: Field 39 94, duplicate transmission: never final (the first may be booked).
DUPLICATE_TRANSMISSION: Final = "94"
#: Field 39 10, approved for a partial amount: reversed, and the sale declined.
PARTIAL_APPROVAL: Final = "10"
#: Field 39 95, reconcile error: the 0500's totals are not the host's (the batch upload).
OUT_OF_BALANCE: Final = "95"
#: Field 39 of the one 0410 that settles a reversal.
REVERSAL_ACKNOWLEDGED: Final = "00"
#: Field 39 91, issuer or switch inoperative: a decline now, never an advice's last word.
ISSUER_INOPERATIVE: Final = "91"
#: The keystore data key that seals the fields of the remembered messages.
MEMORY_KEY_PURPOSE: Final = "iso8583/message-memory"

Sleep = Callable[[float], None]
Token = Callable[[int], bytes]

#: The kinds of remembered messages (terminal.store.link_messages), as the link writes them.
_PURCHASE, _PREAUTH, _REFUND, _VOID = "purchase", "preauth", "refund", "void"
_INCREMENT, _CAPTURE, _RELEASE = "increment", "capture", "release"
_REVERSAL, _ADVICE, _SETTLEMENT = "reversal", "advice", "settlement"
#: The key of a settlement's second 0500 (960000, after the batch upload): its first's + this.
_AFTER_UPLOAD: Final = "/after-upload"
#: What a reversal's key is: the original's key behind this (the pipos client's own).
_REVERSAL_PREFIX: Final = "rev-"
#: What the HostRejectedError of each refusal carries as its status (the pipos protocol's
#: HTTP statuses, which callers already read: nothing of ISO 8583 is an HTTP status).
_STATUS: Final[Mapping[ResponseOutcome, int]] = {
    ResponseOutcome.DECLINED: 402,
    ResponseOutcome.REFUSED: 422,
    ResponseOutcome.SECURITY: 401,
    ResponseOutcome.HOST_FAULT: 503,
    ResponseOutcome.OUT_OF_BALANCE: 409,
    ResponseOutcome.APPROVED: 200,
}
#: Field 63 of the 0810 to a key exchange: ``MAC=<TR-31 block>;PIN=<TR-31 block>``.
_KEY_FIELD: Final = "63"
_ENTRY_MODES: Final[frozenset[str]] = frozenset({"contactless", "contactless_magstripe", "qr"})


# --- exceptions ---------------------------------------------------------------------------


class Iso8583ResponseError(HostRejectedError):
    """The ISO 8583 host answered and did not do what was asked: a refund or a void it
    declined or refused (12 invalid transaction: a void of a sale it does not know), a
    request it refused as sent (30 format error, 94 duplicate transmission), or did not
    process (63 security violation, 96 system malfunction). `code` is field 39 and
    `message` its words ("12 invalid transaction"), which the merchant reads."""

    def __init__(self, what: str, meaning: ResponseCode) -> None:
        super().__init__(_STATUS[meaning.outcome], meaning.code, meaning.text("en"))
        self.what = what
        self.outcome = meaning.outcome


class Iso8583NotRegisteredError(NotEnrolledError):
    """The terminal has no identity on the ISO 8583 link: no terminal master key was
    loaded, or the host does not know its terminal id (39=58 to the key exchange)."""


class Iso8583RequestError(AcquirerError):
    """The request cannot be made into an ISO 8583 message (a value the profile's field
    does not take, or the original a void, reversal or hold change names is not in the
    link's memory): nothing was sent."""


class StatusLookupUnsupportedError(AcquirerError):
    """ISO 8583 has no message asking the host what became of a transaction: the
    reconciliation report shows the host's side of each line as not asked."""


# --- keys ---------------------------------------------------------------------------------


def _key_check_value(key: bytes, algorithm: str) -> str:
    """The key check value a key-injection facility prints beside a key: AES-CMAC over a
    zero block (ANSI X9.24-1:2017, for AES keys) or TDES over zeros, first 3 bytes."""
    if algorithm == "A":
        mac = cmac.CMAC(algorithms.AES(key))
        mac.update(bytes(16))
        return mac.finalize()[:3].hex().upper()
    return psec.des.generate_kcv(key, 3).hex().upper()


def load_terminal_master_key(keystore: Keystore, kbpk: bytes, key_block: str) -> str:
    """Open the terminal master key from its TR-31 block (usage K0, under the key-injection
    facility's key-block protection key `kbpk`) and keep it sealed in `keystore`; the
    session keys kept under the TMK before are dropped (the next connection exchanges new
    ones). Returns the TMK's key check value (6 hex digits) for the technician to compare
    with the facility's. KeyBlockRefusedError, and nothing is stored, for a block that does
    not open or holds another kind of key."""
    tmk = unwrap_key_block(kbpk, key_block, "master")
    keystore.set_secrets({SECRET_TMK: tmk.key, SECRET_MAC_KEY: None, SECRET_PIN_KEY: None})
    return _key_check_value(tmk.key, tmk.algorithm)


def open_memory(directory: str | os.PathLike[str], keystore: Keystore) -> LinkMessages:
    """The link's message memory in the terminal's data `directory`, sealed under a key of
    its keystore."""
    return LinkMessages(Path(directory) / MEMORY_FILE, keystore.data_key(MEMORY_KEY_PURPOSE))


def _key_blocks(text: str) -> dict[str, str]:
    blocks: dict[str, str] = {}
    for part in text.split(";"):
        name, separator, block = part.partition("=")
        if separator:
            blocks[name.strip().upper()] = block.strip()
    return blocks


# --- the link -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Booked:
    """A transaction of the open batch that counts in its totals."""

    row: StoredMessage
    credit: bool


def _local_now() -> datetime:
    """Now, aware, in the machine's time zone: fields 12 and 13 are the terminal's local
    time and date (field 7, UTC, is converted from it)."""
    return datetime.now(UTC).astimezone()


class Iso8583Link:
    """One terminal's ISO 8583 link to its acquirer. Thread-safe: one operation at a time
    (the STANs reach the host in order, a reversal follows its original).

    `station`: the terminal id (41) and merchant id (42) the ISO host issued. `currency`:
    the terminal's (the 0500 of an empty batch). `clock`: aware datetimes (fields 7, 12,
    13); `monotonic`: the answer timeout and the idle time."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        station: Station,
        keystore: Keystore,
        counters: LinkCounters,
        memory: LinkMessages,
        currency: int,
        profile: Profile | None = None,
        tls: TlsOptions | None = None,
        connect_timeout: float = 5.0,
        answer_timeout: float = DEFAULT_ANSWER_TIMEOUT,
        echo_interval: float = 60.0,
        clock: Callable[[], datetime] = _local_now,
        monotonic: Callable[[], float] = time.monotonic,
        token: Token = os.urandom,
        sleep: Sleep = time.sleep,
        retries: int = 2,
        max_reversal_attempts: int = 20,
        backoff: tuple[float, float] = (0.25, 8.0),
        pin_capable: bool = False,
    ) -> None:
        self.profile = profile or default_profile()
        if counters.stan_max > self.profile.stan_max:
            raise Iso8583ProfileError(
                f"the STAN counter wraps after {counters.stan_max}, and the profile "
                f"{self.profile.name!r} allows STANs up to {self.profile.stan_max}: open the "
                "counters with the profile's stan_max"
            )
        self.station = station
        self._keystore = keystore
        self._counters = counters
        self._memory = memory
        self._currency = currency
        self._clock = clock
        self._monotonic = monotonic
        self._token = token
        self._sleep = sleep
        self._retries = max(1, retries)
        self._max_reversal_attempts = max(1, max_reversal_attempts)
        self._backoff = backoff
        self._pin_capable = pin_capable
        self.echo_interval = echo_interval
        self._lock = threading.RLock()
        self._mac_key: bytes | None = keystore.secret(SECRET_MAC_KEY)
        #: The session key is no longer trusted (an answer with a wrong MAC, a 63): the
        #: next message is preceded by a key exchange without a MAC.
        self._rekey = False
        self._signed_on = False
        self._last_exchange = monotonic()
        self._connection = Iso8583Connection(
            host,
            port,
            self.profile,
            mac_key=lambda: self._mac_key,
            tls=tls,
            connect_timeout=connect_timeout,
            answer_timeout=answer_timeout,
            clock=monotonic,
        )

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Iso8583Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def new_idempotency_key(self, kind: str) -> str:
        return f"{kind}-{self._token(16).hex()}"

    # --- network management -----------------------------------------------------------

    def _refusal_or_session_key(self, answer: Message) -> bytes | None:
        """The key an 0810 is checked under: the session key, except for the refusal of a
        terminal the host does not know (58), which it cannot MAC (it has no key for it).
        Believed unMAC'd because what it does is what a lost answer would do (the sale
        goes offline), with the technician told why."""
        if answer.get("39") == "58" and not ({"64", "128"} & answer.fields.keys()):
            return None
        return self._mac_key

    def _network(self, build: Callable[..., Request], what: str, **options: Any) -> Message:
        """One 0800 and its 0810 (39=00); HostFaultError when no believable answer came."""
        request = build(station=self.station, stan=self._counters.next_stan(), now=self._clock())
        options.setdefault("answer_key", self._refusal_or_session_key)
        try:
            answer = self._connection.exchange(request, **options)
        except OutcomeUnknownError as exc:
            self._distrust_if_mac(exc)
            raise HostFaultError(f"ISO 8583 {what}: {exc}") from exc
        self._last_exchange = self._monotonic()
        code = answer.get("39")
        if code == "58":
            raise Iso8583NotRegisteredError(
                f"the ISO 8583 host does not know terminal id {self.station.terminal_id!r} "
                f"(39=58 to the {what}): register it at the host, then provision again"
            )
        meaning = meaning_of(code)
        if meaning.outcome is ResponseOutcome.SECURITY:
            self._rekey = True
        if not meaning.approved:
            raise Iso8583ResponseError(what, meaning)
        return answer

    def _tmk(self) -> bytes:
        tmk = self._keystore.secret(SECRET_TMK)
        if tmk is None:
            raise Iso8583NotRegisteredError(
                "no ISO 8583 terminal master key: load it at provisioning (a TR-31 block "
                "under the key-injection facility's key)"
            )
        return tmk

    def _exchange_keys(self) -> None:
        tmk = self._tmk()
        received: dict[str, bytes] = {}
        algorithm = self.profile.mac_algorithm

        def new_mac_key(answer: Message) -> bytes | None:
            if answer.get("39") != "00":
                return None  # a refusal carries no keys (and, 58, cannot be MAC'd): reported
            blocks = _key_blocks(answer.get(_KEY_FIELD))
            if "MAC" not in blocks or "PIN" not in blocks:
                raise MacMismatchError("the 0810 to the key exchange carries no MAC and PIN keys")
            received["mac"] = unwrap_key_block(
                tmk, blocks["MAC"], "mac", mac_algorithm=algorithm
            ).key
            received["pin"] = unwrap_key_block(tmk, blocks["PIN"], "pin").key
            return received["mac"]

        trusted = self._mac_key is not None and not self._rekey
        self._network(key_exchange, "key exchange", send_mac=trusted, answer_key=new_mac_key)
        # Kept (sealed, fsynced) before the first message MAC'd under it.
        self._keystore.set_secrets(
            {SECRET_MAC_KEY: received["mac"], SECRET_PIN_KEY: received["pin"]}
        )
        self._mac_key = received["mac"]
        self._rekey = False
        self._signed_on = False
        log.info("ISO 8583: session keys exchanged")

    def _session(self) -> None:
        """Keys, then the sign-on, once each, before a message that needs them."""
        self._tmk()
        if self._mac_key is None or self._rekey:
            self._exchange_keys()
        if not self._signed_on:
            self._network(sign_on, "sign-on")
            self._signed_on = True

    @contextmanager
    def _before_money(self) -> Iterator[None]:
        """The session for a money message: a failure there sent nothing of it."""
        try:
            self._session()
        except HostFaultError as exc:
            raise HostUnreachable(f"ISO 8583 host not signed on: {exc}") from exc
        yield

    def _distrust_if_mac(self, exc: OutcomeUnknownError) -> None:
        if isinstance(exc.__cause__, MacMismatchError):
            # The host MACs its answers under the session key: either this answer was
            # changed on the way, or the two sides hold different keys. A new exchange
            # settles both.
            self._rekey = True

    def echo_test(self) -> None:
        """The echo test (0800, 301): HostFaultError when unanswered, Iso8583ResponseError
        when refused."""
        with self._lock:
            self._session()
            self._network(echo_test, "echo test")

    def keep_alive(self) -> bool:
        """What the runtime calls now and then: an echo test once the link has been idle
        for `echo_interval` seconds (True when one was sent)."""
        with self._lock:
            if self._monotonic() - self._last_exchange < self.echo_interval:
                return False
            self.echo_test()
            return True

    def whoami(self) -> dict[str, Any]:
        """The checkout's probe: an echo test, answered."""
        self.echo_test()
        return {
            "terminal_id": self.station.terminal_id,
            "merchant_id": self.station.merchant_id,
            "protocol": "iso8583",
        }

    # --- sending a money message ------------------------------------------------------

    def _backoff_sleep(self, attempt: int) -> None:
        base, cap = self._backoff
        self._sleep(min(cap, base * (2**attempt)))

    def _checked(self, request: Request) -> Request:
        try:
            encode_message(self.profile, request.mti, request.fields, None)
        except Iso8583Error as exc:
            raise Iso8583RequestError(f"the {request.mti} cannot be built: {exc}") from exc
        return request

    def _transmit(self, row: StoredMessage, *, first: bool) -> Message:
        """Send the remembered `row`: as it was first sent, or (when it may have reached
        the host before) as a repeat, the same message with origin digit 1."""
        repeat = not first and row.state != UNSENT
        if not first and row.state == UNSENT:
            self._memory.mark_resent(row.key)
        mti = row.mti[:3] + "1" if repeat else row.mti
        try:
            answer = self._connection.exchange(Request(mti, row.fields), reference=row.key)
        except HostUnreachable:
            if first or row.state == UNSENT:
                self._memory.mark_unsent(row.key)  # nothing left: the host has none of it
            raise
        except OutcomeUnknownError as exc:
            self._distrust_if_mac(exc)
            raise
        self._last_exchange = self._monotonic()
        return answer

    def _deliver(
        self,
        key: str,
        kind: str,
        build: Callable[[int, datetime], Request],
        *,
        amount: int,
        currency: int,
        brand: str = "",
        original_key: str = "",
        attempts: int | None = None,
    ) -> tuple[StoredMessage, Message | None]:
        """The remembered message under `key` and the host's answer to it now (None: it
        was answered before, the memory has it). Sent once when new (remembered first),
        repeated when the host may have it, up to `attempts` times (the link's retries):
        HostUnreachable or OutcomeUnknownError after the last, as the pipos client's money
        requests."""
        attempts = self._retries if attempts is None else attempts
        row = self._memory.get(key)
        if row is not None and row.kind != kind:
            raise Iso8583RequestError(f"key {key} names a {row.kind}, not a {kind}")
        if row is not None and row.answered:
            return row, None
        ambiguous: OutcomeUnknownError | None = None
        unreachable: HostUnreachable | None = None
        for attempt in range(attempts):
            if attempt:
                self._backoff_sleep(attempt - 1)
            try:
                with self._before_money():
                    first = row is None
                    if row is None:
                        row = self._remember(
                            key, kind, build, amount, currency, brand, original_key
                        )
                    answer = self._transmit(row, first=first)
                if answer.get("39") == DUPLICATE_TRANSMISSION:
                    # The host holds a message under this STAN and field 7 already, which
                    # may well be booked: nothing final of this one. Repeated, then taken
                    # as an answer lost (an authorisation is reversed).
                    raise OutcomeUnknownError(
                        f"the host answered 94 (duplicate transmission) to {key}", key
                    )
                return row, answer
            except HostUnreachable as exc:
                unreachable = exc
            except OutcomeUnknownError as exc:
                ambiguous = exc
            row = self._memory.get(key)
        if ambiguous is None and unreachable is not None:
            raise unreachable
        raise OutcomeUnknownError(
            f"no answer from the ISO 8583 host to the {kind} after {attempts} attempts "
            f"({ambiguous}); retry with the same idempotency key",
            key,
        )

    def _remember(
        self,
        key: str,
        kind: str,
        build: Callable[[int, datetime], Request],
        amount: int,
        currency: int,
        brand: str,
        original_key: str,
    ) -> StoredMessage:
        now = self._clock()
        stan = self._counters.next_stan()
        request = self._checked(build(stan, now))
        self._memory.record(
            SentMessage(
                key=key,
                kind=kind,
                mti=request.mti,
                stan=stan,
                sent_at=now,
                fields=request.fields,
                amount=amount,
                currency=currency,
                brand=brand,
                original_key=original_key,
            )
        )
        row = self._memory.get(key)
        assert row is not None
        return row

    def _answered(self, row: StoredMessage, answer: Message) -> ResponseCode:
        """Keep the host's answer to `row` (unless it says nothing was processed and a
        repeat may yet be: 63, 96) and say what it means."""
        meaning = self._read(answer)
        if meaning.outcome not in (ResponseOutcome.SECURITY, ResponseOutcome.HOST_FAULT):
            self._memory.answered(
                row.key,
                response_code=meaning.code,
                rrn=answer.get("37").strip(),
                auth_code=answer.get("38").strip(),
            )
        return meaning

    def _read(self, answer: Message) -> ResponseCode:
        """What field 39 of `answer` means; a 63 (security violation) also makes the next
        message wait for a key exchange."""
        meaning = meaning_of(answer.get("39"))
        if meaning.outcome is ResponseOutcome.SECURITY:
            self._rekey = True
        return meaning

    def _meaning(self, row: StoredMessage, answer: Message | None) -> ResponseCode:
        """What the answer means: the one just read (kept), or the one remembered."""
        return meaning_of(row.response_code) if answer is None else self._answered(row, answer)

    # --- authorisation and reversal ---------------------------------------------------

    def _card(self, request: AuthorisationRequest) -> CardData:
        mode = cast(EntryMode, request.entry_mode)
        if request.entry_mode not in _ENTRY_MODES:
            mode = "contactless"
        return CardData(
            pan=request.pan,
            expiry_yymm=(request.expiry or "")[:4],
            pan_sequence=request.pan_sequence,
            entry_mode=mode,
            pin_capable=self._pin_capable,
        )

    def authorise(
        self, request: AuthorisationRequest, *, idempotency_key: str | None = None
    ) -> Authorisation:
        """0200 (a sale) or 0100 (a hold: kind "preauth"). A lost answer is reversed before
        this returns (REVERSED_AFTER_LOST_RESPONSE), or ReversalPendingError."""
        key = idempotency_key or self.new_idempotency_key("auth")
        hold = request.kind == "preauth"
        kind = _PREAUTH if hold else _PURCHASE
        card = self._card(request)

        def build(stan: int, now: datetime) -> Request:
            return financial_request(
                "preauth" if hold else "purchase",
                station=self.station,
                stan=stan,
                now=now,
                amount=request.amount,
                currency=request.currency,
                card=card,
                emv=request.emv,
            )

        with self._lock:
            earlier = self._memory.get(key)
            if (
                earlier is not None
                and not earlier.answered
                and (earlier.reversed or self._memory.get(_REVERSAL_PREFIX + key) is not None)
            ):
                # Its answer was lost and it was reversed (or its reversal is owed): sent
                # again it could be approved afresh, after the terminal said it was undone.
                return Authorisation(
                    outcome=AuthOutcome.REVERSED_AFTER_LOST_RESPONSE,
                    idempotency_key=key,
                    reason="response lost; reversed",
                    reversal_status="reversed" if earlier.reversed else "pending",
                )
            try:
                row, answer = self._deliver(
                    key,
                    kind,
                    build,
                    amount=request.amount,
                    currency=request.currency,
                    brand=request.brand or "",
                    # Never repeated: an authorisation without its answer is reversed.
                    attempts=1,
                )
            except OutcomeUnknownError:
                # No approval without an answer: reversed before anything else is done.
                return reverse_lost_authorisation(self.reverse_until_acknowledged, key)
            if answer is None and row.reversed:
                # Answered once, then reversed (a restart's recovery): no approval stands.
                return Authorisation(
                    outcome=AuthOutcome.REVERSED_AFTER_LOST_RESPONSE,
                    idempotency_key=key,
                    transaction_ref=row.rrn or None,
                    response_code=row.response_code or None,
                    reason="reversed",
                    reversal_status="reversed",
                )
            if answer is None:
                meaning = meaning_of(row.response_code)
                return self._authorisation(key, meaning, row.rrn, row.auth_code)
            meaning = self._answered(row, answer)
            if meaning.code == PARTIAL_APPROVAL:
                # Approved for part of the amount: the terminal takes no partial approvals,
                # and what the host holds of it is given back before the sale is declined.
                try:
                    self.reverse_until_acknowledged(key, reason="partial_approval")
                except ReversalPendingError:
                    raise
                except AcquirerError as exc:
                    raise ReversalPendingError(f"reversal not accepted yet ({exc})", key) from exc
            arpc, arc = _issuer_data(answer)
            return self._authorisation(
                key,
                meaning,
                answer.get("37").strip(),
                answer.get("38").strip(),
                arpc=arpc,
                arc=arc,
            )

    @staticmethod
    def _authorisation(
        key: str,
        meaning: ResponseCode,
        rrn: str,
        auth_code: str,
        *,
        arpc: bytes | None = None,
        arc: bytes | None = None,
    ) -> Authorisation:
        if not meaning.processed:
            raise Iso8583ResponseError("authorisation", meaning)
        words = meaning.text("en").partition(" ")[2]
        return Authorisation(
            outcome=AuthOutcome.APPROVED if meaning.approved else AuthOutcome.DECLINED,
            idempotency_key=key,
            transaction_ref=rrn or None,
            response_code=meaning.code,
            reason=words,
            auth_code=(auth_code or None) if meaning.approved else None,
            arc=arc,
            arpc=arpc,
            arqc_status="verified" if arpc else None,
        )

    def reverse_until_acknowledged(
        self, original_idempotency_key: str, *, reason: str
    ) -> Cancellation:
        """The reversal of the message under the key, sent, then repeated until a 0410
        (bounded: then ReversalPendingError, to be retried with :meth:`reverse`)."""
        last: Exception | None = None
        with self._lock:
            for attempt in range(self._max_reversal_attempts):
                if attempt:
                    self._backoff_sleep(attempt - 1)
                try:
                    return self._reverse_once(original_idempotency_key)
                except (HostUnreachable, OutcomeUnknownError) as exc:
                    last = exc
                except Iso8583ResponseError as exc:
                    owed = (
                        ResponseOutcome.SECURITY,
                        ResponseOutcome.HOST_FAULT,
                        ResponseOutcome.APPROVED,  # 08, 11: no acknowledgement of a reversal
                    )
                    if exc.outcome not in owed:
                        raise
                    last = exc  # not processed: sent again
        raise ReversalPendingError(
            f"reversal not acknowledged after {self._max_reversal_attempts} attempts ({last})",
            original_idempotency_key,
        )

    def _reverse_once(self, original_key: str) -> Cancellation:
        key = _REVERSAL_PREFIX + original_key
        original = self._memory.get(original_key)
        if original is None:
            # Remembered before it is sent: a message the memory does not have never left.
            return Cancellation("nothing_to_reverse", None, key)
        # One attempt here: the callers repeat it, with their own bounds.
        row, answer = self._deliver(
            key,
            _REVERSAL,
            self._reversal_of(original),
            amount=original.amount,
            currency=original.currency,
            brand=original.brand,
            original_key=original.key,
            attempts=1,
        )
        return self._reversal_answer(row, answer, original)

    def _reversal_of(
        self, original: StoredMessage, amount: int | None = None
    ) -> Callable[[int, datetime], Request]:
        """The reversal of `original`: of its own amount, or of `amount` (what a hold holds
        after its increments, given back whole by its release)."""
        # The fields a reversal repeats, from the original's clear columns when its sealed
        # fields are gone (its batch was reconciled): the host finds it by field 90.
        fields: dict[str, FieldValue] = {
            "3": "000000",
            "49": f"{original.currency:03d}",
        }
        fields |= dict(original.fields)
        fields["4"] = f"{original.amount if amount is None else amount:012d}"
        source = OriginalMessage(original.mti, f"{original.stan:06d}", original.sent_at, fields)

        def build(stan: int, now: datetime) -> Request:
            return reversal(
                source, station=self.station, stan=stan, now=now, mti=self.profile.reversal_mti
            )

        return build

    def _reversal_answer(
        self, row: StoredMessage, answer: Message | None, original: StoredMessage
    ) -> Cancellation:
        """Only a 0410 with 00 settles a reversal (the host answers 00 for "nothing to
        reverse" too; 08 or 11 approve a sale, not a reversal); any other answer leaves it
        owed, to be repeated."""
        if answer is None:
            meaning = meaning_of(row.response_code)
        else:
            meaning = self._read(answer)
            if meaning.code == REVERSAL_ACKNOWLEDGED:
                self._memory.reversal_acknowledged(row.key, response_code=meaning.code)
        if meaning.code != REVERSAL_ACKNOWLEDGED:
            raise Iso8583ResponseError("reversal", meaning)
        return Cancellation("reversed", original.rrn or None, row.key)

    def reverse(
        self,
        *,
        original_idempotency_key: str | None = None,
        original_ref: str | None = None,
        reason: str = "merchant",
    ) -> Cancellation:
        """Reverse an authorisation by its idempotency key or its RRN: sent (or repeated)
        up to the link's retries. ISO 8583 carries no reason: `reason` is only logged."""
        with self._lock:
            if original_idempotency_key:
                key = original_idempotency_key
            elif original_ref:
                found = self._memory.by_rrn(original_ref, (_PURCHASE, _PREAUTH))
                if found is None:
                    raise Iso8583RequestError(
                        f"reverse: no authorisation with RRN {original_ref[:40]!r} in the link's "
                        "memory (a reversal names its original by the original's own fields)"
                    )
                key = found.key
            else:
                raise AcquirerError("reverse: give original_idempotency_key or original_ref")
            log.info("ISO 8583: reversal of %s (%s)", key, reason)
            last: AcquirerError | None = None
            for attempt in range(self._retries):
                if attempt:
                    self._backoff_sleep(attempt - 1)
                try:
                    return self._reverse_once(key)
                except (HostUnreachable, OutcomeUnknownError) as exc:
                    last = exc
            assert last is not None
            raise last

    # --- voids and refunds ------------------------------------------------------------

    def _original(self, rrn: str, kinds: Sequence[str], what: str) -> StoredMessage:
        found = self._memory.by_rrn(rrn, kinds)
        if found is None or not meaning_of(found.response_code).approved:
            raise Iso8583RequestError(
                f"{what}: no approved transaction with RRN {rrn[:40]!r} in the link's memory "
                "(an ISO 8583 message names its original by the original's own fields)"
            )
        return found

    def void(self, transaction_ref: str, *, idempotency_key: str | None = None) -> Cancellation:
        """0200, processing code 02: cancels the sale with RRN `transaction_ref` (its RRN
        and authorisation code in fields 37, 38). 12 from the host: Iso8583ResponseError."""
        key = idempotency_key or "void-" + transaction_ref
        with self._lock:
            row = self._memory.get(key)
            if row is None:
                sale = self._original(transaction_ref, (_PURCHASE,), "void")
            else:
                sale = self._memory.get(row.original_key) or row

            def build(stan: int, now: datetime) -> Request:
                return financial_request(
                    "void",
                    station=self.station,
                    stan=stan,
                    now=now,
                    amount=sale.amount,
                    currency=sale.currency,
                    card=None,
                    original_rrn=transaction_ref,
                    original_auth_code=sale.auth_code,
                )

            row, answer = self._deliver(
                key,
                _VOID,
                build,
                amount=sale.amount,
                currency=sale.currency,
                brand=sale.brand,
                original_key=sale.key,
            )
            meaning = self._meaning(row, answer)
            if not meaning.approved:
                raise Iso8583ResponseError("void", meaning)
            return Cancellation("voided", transaction_ref, key)

    def refund(self, request: RefundRequest, *, idempotency_key: str | None = None) -> RefundResult:
        """0200, processing code 20: with the sale's RRN (37) when it names one, with the
        card's PAN (2) when it is given instead. A decline: Iso8583ResponseError."""
        key = idempotency_key or self.new_idempotency_key("refund")
        with self._lock:
            sale = (
                self._memory.by_rrn(request.original_ref, (_PURCHASE, _ADVICE, _CAPTURE))
                if request.original_ref
                else None
            )
            card = CardData(pan=request.pan) if request.pan else None

            def build(stan: int, now: datetime) -> Request:
                return financial_request(
                    "refund",
                    station=self.station,
                    stan=stan,
                    now=now,
                    amount=request.amount,
                    currency=request.currency,
                    card=card,
                    original_rrn=request.original_ref or "",
                )

            row, answer = self._deliver(
                key,
                _REFUND,
                build,
                amount=request.amount,
                currency=request.currency,
                brand=(sale.brand if sale else "") or request.brand or "",
                original_key=sale.key if sale else "",
            )
            meaning = self._meaning(row, answer)
            if not meaning.approved:
                raise Iso8583ResponseError("refund", meaning)
            rrn = row.rrn if answer is None else answer.get("37").strip()
            return RefundResult("approved", rrn, request.original_ref, key)

    # --- pre-authorisations -----------------------------------------------------------

    def _hold_change(
        self,
        preauth_ref: str,
        kind: str,
        key: str,
        amount: int | None,
        build_for: Callable[[StoredMessage], Callable[[int, datetime], Request]],
    ) -> HoldChange:
        with self._lock:
            row = self._memory.get(key)
            hold = (
                self._original(preauth_ref, (_PREAUTH,), f"pre-authorisation {kind}")
                if row is None
                else self._memory.get(row.original_key)
            )
            if hold is None:
                raise Iso8583RequestError(f"{kind} {key}: its pre-authorisation is not remembered")
            change_amount = self._held(hold)[0] if amount is None else amount
            row, answer = self._deliver(
                key,
                kind,
                build_for(hold),
                amount=change_amount,
                currency=hold.currency,
                brand=hold.brand,
                original_key=hold.key,
            )
            if answer is None:
                meaning = meaning_of(row.response_code)
            elif kind == _RELEASE:
                meaning = self._read(answer)
                if meaning.code == REVERSAL_ACKNOWLEDGED:
                    self._memory.reversal_acknowledged(key, response_code=meaning.code)
                elif meaning.approved:
                    # 08 or 11 approve a sale, never settle a reversal: kept owed, repeated.
                    raise Iso8583ResponseError("pre-authorisation release", meaning)
                elif meaning.outcome is not ResponseOutcome.HOST_FAULT and meaning.processed:
                    self._memory.answered(key, response_code=meaning.code)
            else:
                meaning = self._answered(row, answer)
            if not meaning.processed:
                raise Iso8583ResponseError(f"pre-authorisation {kind}", meaning)
            authorised, captured, released, status = self._held(hold)
            ref = (answer.get("37").strip() if answer is not None else row.rrn) or preauth_ref
            return HoldChange(
                status="approved" if meaning.approved else "declined",
                transaction_ref=ref,
                preauth_ref=preauth_ref,
                amount=change_amount,
                authorised_amount=authorised,
                captured_amount=captured,
                released_amount=released,
                hold_status=status,
                idempotency_key=key,
                response_code=meaning.code,
                reason=meaning.text("en").partition(" ")[2],
            )

    def _held(self, hold: StoredMessage) -> tuple[int, int, int, str]:
        """The hold after its changes, from the memory: held, captured, released, status."""
        authorised = hold.amount
        captured = released = 0
        status = "open"
        for change in self._memory.changes_of(hold.key):
            if not (change.answered and meaning_of(change.response_code).approved):
                continue
            if change.kind == _INCREMENT:
                authorised += change.amount
            elif change.kind == _CAPTURE:
                captured, released, status = change.amount, authorised - change.amount, "captured"
            elif change.kind in (_RELEASE, _REVERSAL):
                released, status = authorised, "released"
        return authorised, captured, released, status

    def _hold_request(
        self, hold: StoredMessage, amount: int, *, capture: bool
    ) -> Callable[[int, datetime], Request]:
        def build(stan: int, now: datetime) -> Request:
            return financial_request(
                "purchase" if capture else "preauth",
                station=self.station,
                stan=stan,
                now=now,
                amount=amount,
                currency=hold.currency,
                card=None,
                original_rrn=hold.rrn,
                offline_advice=capture,
                pos_condition="06",
            )

        return build

    def increment_hold(
        self, preauth_ref: str, amount: int, currency: int, *, idempotency_key: str
    ) -> HoldChange:
        """0100 with the hold's RRN (37) and condition 06: the hold raised by `amount`."""
        return self._hold_change(
            preauth_ref,
            _INCREMENT,
            idempotency_key,
            amount,
            lambda hold: self._hold_request(hold, amount, capture=False),
        )

    def capture_hold(
        self, preauth_ref: str, amount: int, currency: int, *, idempotency_key: str
    ) -> HoldChange:
        """0220 completion with the hold's RRN (37) and condition 06: `amount` taken, the
        rest released by the host."""
        return self._hold_change(
            preauth_ref,
            _CAPTURE,
            idempotency_key,
            amount,
            lambda hold: self._hold_request(hold, amount, capture=True),
        )

    def release_hold(self, preauth_ref: str, *, idempotency_key: str) -> HoldChange:
        """0400 naming the hold's 0100 (field 90): the hold given back whole."""
        return self._hold_change(
            preauth_ref,
            _RELEASE,
            idempotency_key,
            None,
            lambda hold: self._reversal_of(hold, self._held(hold)[0]),
        )

    # --- offline payments -------------------------------------------------------------

    def upload_offline(
        self, items: Sequence[OfflineItem], *, idempotency_key: str | None = None
    ) -> BatchUploadResult:
        """One 0220 advice per payment, in order, each remembered under its offline id (a
        payment in a later batch again is answered from the memory, or repeated). The
        first item that gets no answer, or a 63 or 96, stops the upload (the items after
        it are not sent): OutcomeUnknownError / HostUnreachable / HostFaultError for the
        whole batch, to be sent again as it is."""
        key = idempotency_key or self.new_idempotency_key("batch")
        results: list[BatchItemResult] = []
        with self._lock:
            for item in items:
                results.append(self._advise(item))
        return BatchUploadResult(tuple(results), key)

    def _advise(self, item: OfflineItem) -> BatchItemResult:
        card = CardData(
            pan=item.pan,
            expiry_yymm=(item.expiry or "")[:4],
            pan_sequence=item.pan_sequence,
            pin_capable=self._pin_capable,
        )

        def build(stan: int, now: datetime) -> Request:
            return financial_request(
                "purchase",
                station=self.station,
                stan=stan,
                now=now,
                amount=item.amount,
                currency=item.currency,
                card=card,
                emv=item.emv,
                offline_advice=True,
                terminal_reference=item.offline_id,
            )

        row, answer = self._deliver(
            f"advice-{item.offline_id}",
            _ADVICE,
            build,
            amount=item.amount,
            currency=item.currency,
            brand=item.brand or "",
        )
        if answer is None:
            meaning = meaning_of(row.response_code)
        else:
            meaning = self._read(answer)
            if not _settles_advice(meaning):
                # Not an answer the payment can rest on: kept unanswered, and the advice
                # repeated (0221, the same STAN) with the batch, before any later one.
                raise HostFaultError(
                    f"offline advice {item.offline_id}: the host did not take it "
                    f"({meaning.text('en')}); the batch is sent again later"
                )
            meaning = self._answered(row, answer)
        rrn = (row.rrn if answer is None else answer.get("37").strip()) or None
        if meaning.processed:
            result = "approved" if meaning.approved else "declined"
            return BatchItemResult(item.offline_id, result, rrn, result, meaning.code)
        return BatchItemResult(
            item.offline_id,
            "refused",
            rrn,
            "refused",
            meaning.code,
            reason_code=f"iso8583_{meaning.code}",
            reason=meaning.text("en"),
        )

    # --- status -----------------------------------------------------------------------

    def status(
        self, *, transaction_ref: str | None = None, idempotency_key: str | None = None
    ) -> TransactionStatus:
        raise StatusLookupUnsupportedError("the ISO 8583 link has no status lookup")

    # --- settlement -------------------------------------------------------------------

    @staticmethod
    def _booked(rows: Sequence[StoredMessage]) -> list[_Booked]:
        """The transactions of `rows` (a batch's) that count in its totals."""
        undone = {
            row.original_key
            for row in rows
            if row.kind == _VOID and row.answered and meaning_of(row.response_code).approved
        }
        booked: list[_Booked] = []
        for row in rows:
            if row.reversed or row.key in undone or not row.answered:
                continue
            if not meaning_of(row.response_code).approved:
                continue
            if row.kind in (_PURCHASE, _ADVICE, _CAPTURE):
                booked.append(_Booked(row, credit=False))
            elif row.kind == _REFUND:
                booked.append(_Booked(row, credit=True))
        return booked

    def _reconcile_step(self, request: Request, key: str, what: str) -> ResponseCode:
        try:
            answer = self._connection.exchange(request, reference=key)
        except OutcomeUnknownError as exc:
            self._distrust_if_mac(exc)
            raise OutcomeUnknownError(f"settlement, {what}: {exc}", key) from exc
        self._last_exchange = self._monotonic()
        return self._read(answer)

    def _second_0500(self, first: StoredMessage) -> StoredMessage | None:
        """The 0500 (960000) sent after the batch upload that `first`'s 95 asked for."""
        return self._memory.get(first.key + _AFTER_UPLOAD)

    def _pending_settlement(self, rows: Sequence[StoredMessage]) -> StoredMessage | None:
        """The end of day under way in the open batch: its first 0500 not answered yet, or
        answered 95 and its second 0500 (after the upload) not approved yet. Its 0500 is
        repeated (0501, the same STAN and totals), never a new one for the same batch,
        which a host that booked the first could close twice."""
        for row in rows:
            if row.kind != _SETTLEMENT or row.original_key:
                continue
            if not row.answered or meaning_of(row.response_code).approved:
                return row  # unanswered, or approved and not closed yet (a crash between)
            if row.response_code != OUT_OF_BALANCE:
                continue
            second = self._second_0500(row)
            if second is None or not second.answered or meaning_of(second.response_code).approved:
                return row
        return None

    def settle(
        self,
        *,
        terminal_totals: Sequence[BrandTotals] | None = None,
        idempotency_key: str | None = None,
    ) -> Settlement:
        """Reconcile the batch (0500, 920000) with its totals counted from the memory; on
        95 every booked transaction as a 0320, then the 0500 again (960000). The host's
        0510 carries no totals: the Settlement's totals are the link's, and `in_balance`
        whether the host agreed with them at once. `terminal_totals` is not sent (an ISO
        8583 reconciliation carries one set of totals, the link's own).

        Exactly once, as the money messages: each 0500 is remembered (kind settlement)
        before it is sent. A 0500 whose answer was lost is repeated (0501) by the next
        call, whatever its key, over the transactions it counted (later ones wait for the
        next batch); the batch number is the open batch's own, taken once. A call again
        under the key of a settlement done answers it from the memory."""
        key = idempotency_key or self.new_idempotency_key("settle")
        with self._lock, self._before_money():
            earlier = self._memory.get(key)
            if earlier is not None and earlier.kind != _SETTLEMENT:
                raise Iso8583RequestError(f"key {key} names a {earlier.kind}, not a settlement")
            if earlier is not None and earlier.batch and self._closed_by(earlier):
                return self._settled(earlier, self._memory.batch_rows(earlier.batch))
            rows = self._memory.open_batch()
            pending = self._pending_settlement(rows)
            if pending is not None:
                key = pending.key
                rows = [row for row in rows if row.seq < pending.seq]
            booked = self._booked(rows)
            currencies = {b.row.currency for b in booked} or {self._currency}
            if len(currencies) > 1:
                raise Iso8583RequestError(
                    "an ISO 8583 reconciliation (0500) carries one currency, and this batch "
                    f"has {len(currencies)}"
                )
            (currency,) = currencies
            totals = ReconciliationTotals(
                debits_count=sum(1 for b in booked if not b.credit),
                debits_amount=sum(b.row.amount for b in booked if not b.credit),
                credits_count=sum(1 for b in booked if b.credit),
                credits_amount=sum(b.row.amount for b in booked if b.credit),
            )
            batch_number = self._open_batch_number(rows if pending is None else [pending])

            def reconcile(after_upload: bool) -> Callable[[int, datetime], Request]:
                def build(stan: int, now: datetime) -> Request:
                    return reconciliation(
                        totals,
                        station=self.station,
                        stan=stan,
                        now=now,
                        batch_number=batch_number,
                        currency=currency,
                        after_upload=after_upload,
                    )

                return build

            first, answer = self._deliver(
                key, _SETTLEMENT, reconcile(False), amount=totals.net, currency=currency
            )
            meaning = self._meaning(first, answer)
            in_balance = meaning.approved
            uploaded = self._second_0500(first) is not None
            if meaning.outcome is ResponseOutcome.OUT_OF_BALANCE and not uploaded:
                for item in booked:
                    upload = self._reconcile_step(self._upload(item.row), key, "0320")
                    if not upload.approved:
                        raise Iso8583ResponseError("batch upload", upload)
            if meaning.outcome is ResponseOutcome.OUT_OF_BALANCE:
                # Sent once the batch is uploaded; after that repeated (0501) or answered
                # from the memory, never preceded by a second upload.
                second, answer = self._deliver(
                    key + _AFTER_UPLOAD,
                    _SETTLEMENT,
                    reconcile(True),
                    amount=totals.net,
                    currency=currency,
                    original_key=key,
                )
                meaning = self._meaning(second, answer)
            if not meaning.approved:
                raise Iso8583ResponseError("reconciliation", meaning)
            batch_id = f"{self.station.terminal_id.strip()}-{batch_number:06d}"
            self._memory.close_batch(batch_id, through_seq=first.seq, settled_by=key)
            settled = self._memory.get(key)
            assert settled is not None
            return self._settled(settled, self._memory.batch_rows(batch_id), in_balance)

    def _closed_by(self, first: StoredMessage) -> bool:
        """Whether the 0500 `first` closed its batch itself (00, or 95 and then its second
        0500 approved), not a refused one stamped with the batch another 0500 closed."""
        if first.response_code == OUT_OF_BALANCE:
            second = self._second_0500(first)
            return second is not None and meaning_of(second.response_code).approved
        return meaning_of(first.response_code).approved

    def _open_batch_number(self, rows: Sequence[StoredMessage]) -> int:
        """The batch number of the open batch: the one its earlier 0500 carried (refused,
        or not processed), else a new one, taken once."""
        for row in reversed(rows):
            number = row.fields.get("60") if row.kind == _SETTLEMENT else None
            if isinstance(number, str) and number.isdigit():
                return int(number)
        return self._counters.next_batch()

    def _settled(
        self, first: StoredMessage, rows: Sequence[StoredMessage], in_balance: bool | None = None
    ) -> Settlement:
        """The Settlement of the reconciled batch `rows`, closed by the 0500 `first`."""
        booked = self._booked([row for row in rows if row.kind != _SETTLEMENT])
        return Settlement(
            batch_id=first.batch,
            closed_at=int(first.sent_at.timestamp()),
            transaction_count=len(booked),
            totals=_brand_totals(booked),
            in_balance=first.response_code != OUT_OF_BALANCE if in_balance is None else in_balance,
            idempotency_key=first.key,
        )

    def _upload(self, row: StoredMessage) -> Request:
        # The batch is open: the row's sealed fields (its card, entry mode) are all here.
        fields: dict[str, FieldValue] = {"3": "000000", **row.fields}
        fields |= {"4": f"{row.amount:012d}", "49": f"{row.currency:03d}"}
        original = OriginalMessage(row.mti, f"{row.stan:06d}", row.sent_at, fields)
        return batch_upload(
            original,
            station=self.station,
            stan=self._counters.next_stan(),
            now=self._clock(),
            rrn=row.rrn,
            auth_code=row.auth_code,
        )


def _settles_advice(meaning: ResponseCode) -> bool:
    """Whether an 0230's field 39 is the host's last word on an offline payment: approved,
    or a decline or refusal the terminal knows (the host booked it, or a person must look
    at it). 91 (issuer or switch inoperative), 96, 63 and a code the terminal does not know
    say nothing of the payment: its advice is repeated until one of those comes."""
    if meaning.code not in RESPONSES or meaning.code == ISSUER_INOPERATIVE:
        return False
    return meaning.outcome not in (
        ResponseOutcome.SECURITY,
        ResponseOutcome.HOST_FAULT,
        ResponseOutcome.OUT_OF_BALANCE,
    )


def _issuer_data(answer: Message) -> tuple[bytes | None, bytes | None]:
    """The ARPC and ARC from field 55 of an answer (tag 91: ARPC, 8 bytes, then the ARC;
    8A: the ARC), or None where the host gave none or the field is not BER-TLV."""
    value = answer.fields.get("55")
    if not isinstance(value, bytes) or not value:
        return None, None
    try:
        objects = {node.tag: node.value for node in tlv.decode(value) if not node.constructed}
    except EmvError as exc:
        log.warning("ISO 8583: field 55 of the %s is not BER-TLV (%s); ignored", answer.mti, exc)
        return None, None
    issuer = objects.get(0x91)
    arc = objects.get(0x8A)
    arpc = issuer[:8] if issuer is not None and len(issuer) >= 8 else None
    if arc is None and issuer is not None and len(issuer) >= 10:
        arc = issuer[8:10]
    return arpc, arc


def _brand_totals(booked: Sequence[_Booked]) -> tuple[BrandTotals, ...]:
    lines: dict[tuple[str, int], list[int]] = {}
    for item in booked:
        line = lines.setdefault((item.row.brand, item.row.currency), [0, 0, 0, 0])
        offset = 2 if item.credit else 0
        line[offset] += 1
        line[offset + 1] += item.row.amount
    return tuple(
        BrandTotals(
            brand=brand,
            currency=currency,
            sales_count=sales,
            sales_amount=sold,
            refunds_count=refunds,
            refunds_amount=refunded,
            net_amount=sold - refunded,
        )
        for (brand, currency), (sales, sold, refunds, refunded) in sorted(lines.items())
    )
