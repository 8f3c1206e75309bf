"""Reconciliation: totals, end of day against the acquirer, the offline queue's sync, the
reversals still owed, and recovery after a crash."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from offline_queue.errors import QueueError
from offline_queue.model import State as QueueState

from ..acquirer.client import (
    AcquirerError,
    BrandTotals,
    HostRejectedError,
    HostUnreachable,
    NotEnrolledError,
)
from ..acquirer.qr_client import QrHostError
from ..domain.currency import format_amount
from ..domain.messages import Result, brand_text, ui_strings
from ..domain.receipts import report_text_lines
from ..domain.records import (
    DECLINED_AFTER_THE_FACT,
    Kind,
    State,
    TotalsLine,
    TxnRecord,
    brand_method,
)
from ..store.journal import BatchRow
from .core import QR_CANCEL_PREFIX, _now_text
from .errors import AcquirerRequiredError, NotFoundError
from .failures import link_failure
from .refunds import RefundsAndVoids

__all__ = ["Reconciliation", "legacy_report", "totals_json"]

log = logging.getLogger(__name__)


def totals_json(lines: Sequence[TotalsLine]) -> list[dict[str, Any]]:
    return [
        {
            "brand": line.brand,
            "currency": line.currency,
            "sales_count": line.sales_count,
            "sales_amount": line.sales_amount,
            "refunds_count": line.refunds_count,
            "refunds_amount": line.refunds_amount,
            "net_amount": line.net_amount,
            "offline_count": line.offline_count,
            "offline_amount": line.offline_amount,
            "net_text": format_amount(line.net_amount, line.currency),
        }
        for line in lines
    ]


#: The counts and amounts a totals line carries, and that a line must agree on with the
#: bank's for the batch to be in balance.
_COMPARED: Final = ("sales_count", "sales_amount", "refunds_count", "refunds_amount")
#: Why a batch was not closed, for the log and the checkout's error (never an exception's
#: text: the local API words it in the terminal's language by the failure's code).
_NOT_CLOSED: Final = {
    "unreachable": "bank unreachable, batch not closed",
    "no_answer": "no answer from the bank, batch not closed",
    "host_error": "the bank refused the end of day, batch not closed",
}


def _amounts(counts: Mapping[str, int], currency: int) -> dict[str, Any]:
    """Counts and amounts of a line or a grand total, each amount with its text."""
    net = counts["sales_amount"] - counts["refunds_amount"]
    out: dict[str, Any] = {name: int(counts[name]) for name in _COMPARED}
    out["net_amount"] = net
    for name in ("sales_amount", "refunds_amount", "net_amount"):
        out[f"{name}_text"] = format_amount(out[name], currency)
    return out


def _brand_key(brand: str) -> str:
    """A brand as both sides name it (the bank's ledger keeps it in lower case)."""
    return (brand or "UNKNOWN").strip().upper()


def _grand_totals(lines: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per currency: the sum of the lines' counts and amounts."""
    sums: dict[int, dict[str, int]] = {}
    for line in lines:
        total = sums.setdefault(int(line["currency"]), dict.fromkeys(_COMPARED, 0))
        for name in _COMPARED:
            total[name] += int(line[name])
    return [{"currency": cur} | _amounts(total, cur) for cur, total in sorted(sums.items())]


def legacy_report(batch: BatchRow, language: str) -> dict[str, Any]:
    """The report of a batch an earlier version closed, from what it kept: the bank's
    totals only (no terminal side, no comparison), worded in `language`."""
    host: list[dict[str, Any]] = [
        {
            "brand": _brand_key(str(t["brand"])),
            "brand_text": brand_text(_brand_key(str(t["brand"])), language),
            "method": brand_method(str(t["brand"])),
            "currency": int(t["currency"]),
        }
        | _amounts(t, int(t["currency"]))
        for t in batch.totals
    ]
    report: dict[str, Any] = {
        "batch_id": batch.batch_id,
        "closed_at": batch.closed_at,
        "language": language,
        "legacy": True,
        "lines": [],
        "host_lines": host,
        "grand_totals": [],
        "host_grand_totals": _grand_totals(host),
        "differences": None,
        "in_balance": None,
        "transactions": None,
        "host_transactions": sum(int(t["sales_count"]) + int(t["refunds_count"]) for t in host),
        "host_totals": batch.totals,
    }
    report["text"] = report_text_lines(report)
    return report


class Reconciliation(RefundsAndVoids):
    """End of day, sync and recovery."""

    def totals(self) -> list[TotalsLine]:
        return self.journal.open_totals()

    def _line_json(self, line: TotalsLine) -> dict[str, Any]:
        strings = ui_strings(self.language)
        return {
            "brand": line.brand,
            "brand_text": brand_text(line.brand, self.language),
            "method": line.method,
            "method_text": strings[f"method_{line.method}"],
            "currency": line.currency,
        } | _amounts(
            {name: getattr(line, name) for name in _COMPARED},
            line.currency,
        )

    def totals_report(self) -> dict[str, Any]:
        """The open batch as the Totals tab shows it before the end of day: per payment
        method (card brand, or code wallet / scheme) and per currency, approved sales and
        approved refunds only (voided sales, voids, declines, cancels and failures never
        count; nor does an offline sale the bank declined after the fact); offline sales
        still waiting to be sent are in, and counted apart in `offline_*` and `offline`."""
        lines = self.journal.open_totals()
        shown = [
            self._line_json(line)
            | {
                "offline_count": line.offline_count,
                "offline_amount": line.offline_amount,
                "offline_amount_text": format_amount(line.offline_amount, line.currency),
            }
            for line in lines
        ]
        summary = self.queue_summary()
        return {
            "lines": shown,
            "grand_totals": _grand_totals(shown),
            "offline": {
                "count": summary.count,
                "amounts": summary.to_json()["amounts"],
                "amount_text": ", ".join(
                    format_amount(amount, cur) for cur, amount in sorted(summary.amounts.items())
                ),
            },
            "transactions": sum(line.sales_count + line.refunds_count for line in lines),
            "totals": totals_json(lines),
        }

    def batch_report(self, batch_id: str) -> dict[str, Any]:
        """The end-of-day report of a closed batch, as it was when the batch was closed
        (a batch an earlier version closed: what it kept). NotFoundError for another id."""
        batch = self.journal.batch(batch_id)
        if batch is None:
            raise NotFoundError(f"no batch {batch_id!r} on this terminal", reason="no_batch")
        return self._stored_report(batch)

    def batch_history(
        self, *, limit: int = 20, before: int | None = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Closed batches' reports, newest first, and the cursor of the next (older) page."""
        rows = self.journal.batches(limit=limit + 1, before=before)
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = rows[-1].seq if more and rows else None
        return [self._stored_report(row) for row in rows], cursor

    def _stored_report(self, batch: BatchRow) -> dict[str, Any]:
        if batch.report is not None:
            return batch.report
        return legacy_report(batch, self.language)

    def _end_of_day_report(
        self,
        batch_id: str,
        closed_at: str,
        mine: Sequence[TotalsLine],
        host: Sequence[BrandTotals],
        transaction_count: int,
        sync: Mapping[str, int],
    ) -> dict[str, Any]:
        """The terminal's totals and the bank's side by side, line by line (brand and
        currency; the bank names a brand in lower case), each line flagged when the two
        differ, with the grand totals of both and the report's text."""
        by_key = {(_brand_key(t.brand), t.currency): t for t in host}
        lines: list[dict[str, Any]] = []
        for line in mine:
            shown = self._line_json(line)
            theirs = by_key.pop((_brand_key(line.brand), line.currency), None)
            shown["host"] = None if theirs is None else _amounts(theirs.to_json(), theirs.currency)
            shown["differs"] = theirs is None or any(
                shown[name] != getattr(theirs, name) for name in _COMPARED
            )
            lines.append(shown)
        for theirs in by_key.values():  # the bank has a line the terminal has not
            brand = _brand_key(theirs.brand)
            empty = TotalsLine(brand, theirs.currency, method=brand_method(brand))
            lines.append(
                self._line_json(empty)
                | {"host": _amounts(theirs.to_json(), theirs.currency), "differs": True}
            )
        host_lines = [
            line["host"] | {"currency": line["currency"]} for line in lines if line["host"]
        ]
        summary = self.queue_summary()
        differences = sum(1 for line in lines if line["differs"])
        params = self.params.terminal
        report: dict[str, Any] = {
            "batch_id": batch_id,
            "closed_at": closed_at,
            "language": self.language,
            "merchant": {
                "name_location": params.merchant_name_location,
                "identifier": params.merchant_identifier,
            },
            "terminal_id": self.terminal_id,
            "lines": lines,
            "grand_totals": _grand_totals(lines),
            "host_grand_totals": _grand_totals(host_lines),
            "differences": differences,
            "in_balance": differences == 0,
            # Approved sales and refunds, counted as the bank counts them (and the bank's own
            # count of them); `host_records`: every record the bank closed into the batch,
            # declined ones included.
            "transactions": sum(line.sales_count + line.refunds_count for line in mine),
            "host_transactions": sum(t.sales_count + t.refunds_count for t in host),
            "host_records": transaction_count,
            "offline_synced": dict(sync),
            "still_offline": summary.to_json()
            | {
                "amount_text": ", ".join(
                    format_amount(amount, cur) for cur, amount in sorted(summary.amounts.items())
                )
            },
            # As earlier releases answered.
            "host_totals": [t.to_json() for t in host],
            "terminal_totals": [
                BrandTotals(
                    brand=line.brand,
                    currency=line.currency,
                    sales_count=line.sales_count,
                    sales_amount=line.sales_amount,
                    refunds_count=line.refunds_count,
                    refunds_amount=line.refunds_amount,
                    net_amount=line.net_amount,
                ).to_json()
                for line in mine
            ],
        }
        report["text"] = report_text_lines(report)
        return report

    def end_of_day(self) -> dict[str, Any]:
        """Send what the queue holds, close the batch with the acquirer and compare: the
        report (:meth:`_end_of_day_report`) is kept with the batch, in the commit that
        closes it. The terminal's side counts what the bank can know: approved sales
        (online, and offline ones sent, this end of day's sync included) and approved
        refunds; offline sales still waiting stay in the open batch (`still_offline`)."""
        with self._holding():
            if self._acquirer is None:
                raise AcquirerRequiredError(
                    "the terminal is not connected to an acquirer", reason="not_connected"
                )
            sync = self._safe_sync()
            mine = self.journal.open_totals(waiting=False)
            try:
                settlement = self._acquirer.settle(terminal_totals=None)
            except AcquirerError as exc:
                failure = link_failure(exc)
                if isinstance(exc, HostRejectedError):
                    self._link(True)  # a signed refusal is an answer
                else:
                    self._link(
                        False, "unreachable" if isinstance(exc, HostUnreachable) else failure
                    )
                log.warning("end of day: batch not closed (%s)", exc)
                raise AcquirerRequiredError(
                    _NOT_CLOSED.get(failure, _NOT_CLOSED["host_error"])
                ) from exc
            self._link(True)
            closed_at = _now_text(self._now())
            report = self._end_of_day_report(
                settlement.batch_id,
                closed_at,
                mine,
                settlement.totals,
                settlement.transaction_count,
                sync,
            )
            self.journal.close_batch(settlement.batch_id, closed_at, report["host_totals"], report)
            self.events.publish("end_of_day", report)
            return report

    def _safe_sync(self) -> Mapping[str, int]:
        try:
            result = self.queue.sync()
        except QueueError as exc:  # the queue's own errors: report, do not lose the batch
            log.warning("offline sync failed: %s", exc)
            return {"error": 1}
        self._mark_synced()
        answered = sum(result.get(k, 0) for k in ("accepted", "declined", "failed"))
        if answered:
            self._link(True)  # the bank answered a batch: it is back
        elif result.get("upload_errors"):
            # The uploader does not say how it failed: keep what the last exchange said.
            self._link(False, self.host_failure or "unreachable")
        elif self.host_online is False:
            # Nothing was sent (an empty queue says nothing of the bank): ask it.
            self.probe_host()
        return result

    def sync_offline(self) -> Mapping[str, int]:
        """Send the offline queue now and bring the journal up to date with what happened."""
        result = self._safe_sync()
        self._publish_status()
        return result

    def sync_report(self) -> dict[str, Any]:
        """The merchant's "send offline payments": what was sent and, when nothing could
        be, why, in words the page shows ("3 sent", "could not send: bank unreachable")."""
        result = self.sync_offline()
        strings = ui_strings(self.language)
        sent = sum(result.get(k, 0) for k in ("accepted", "declined", "failed"))
        remaining = self.queue_summary().count
        failure = ""
        if result.get("error"):
            failure = "queue_error"
        elif remaining and not sent:
            failure = self.host_failure or "unreachable"
        elif self.host_online is False:
            failure = self.host_failure or "no_answer"
        if failure:
            reason = strings.get(f"host_failure_{failure}", failure)
            text = strings["sync_failed"].format(reason=reason)
        elif sent:
            text = strings["sync_sent"].format(count=sent)
        else:
            text = strings["sync_nothing"]
        return {
            "sent": sent,
            "accepted": result.get("accepted", 0),
            "declined": result.get("declined", 0),
            "failed": result.get("failed", 0),
            "remaining": remaining,
            "ok": not failure,
            "failure": failure,
            "text": text,
            "host_online": self.host_online,
        }

    def probe_host(self) -> bool | None:
        """Ask the bank whether it answers (a signed request that moves no money): the
        evidence that brings an offline terminal back online, or keeps it offline. None
        when there is no bank to ask (not connected, not enrolled)."""
        if self._acquirer is None:
            return None
        try:
            self._acquirer.whoami()
        except NotEnrolledError:
            return None
        except HostRejectedError:
            self._link(True)  # a signed refusal is an answer
        except AcquirerError as exc:
            self._link(False, link_failure(exc))
        else:
            self._link(True)
        return self.host_online

    def _mark_synced(self) -> None:
        """Copy the host references (and after-the-fact declines) from the queue, for every
        offline sale the journal still holds as waiting (selected by the journal, never a
        window of the newest: an older sale the bank got is marked too)."""
        for record in self.journal.waiting_offline():
            state, ref = self.queue.host_ref(record.offline_id)
            if state == QueueState.DECLINED:
                self._transition(
                    record,
                    record.state,
                    reason=DECLINED_AFTER_THE_FACT,
                    host_ref=ref or "",
                )
            elif ref:
                self._transition(record, record.state, host_ref=ref)

    def acknowledge_declines(self) -> dict[str, int]:
        """The merchant has seen the after-the-fact declines: recorded in one journal
        commit, so the banner stays gone after a restart; a later decline shows it again."""
        acknowledged = self.journal.acknowledge_declines(_now_text(self._now()))
        self._publish_status()
        remaining = len(self.journal.declined_after_the_fact(unacknowledged=True))
        return {"acknowledged": acknowledged, "unacknowledged": remaining}

    def owes_the_host(self) -> bool:
        """Whether something the host may have done waits to be undone or settled: a
        reversal or order cancel not yet acknowledged, a void whose answer was lost."""
        return bool(self.journal.pending_reversals() or self.journal.unsettled(Kind.VOID))

    def retry_reversals(self) -> int:
        """Send reversals the host has not acknowledged yet, and settle the voids whose
        answer was lost; returns how many of either remain. A refund whose answer was lost
        is not settled here: the merchant who asks for another refund of the sale is told
        first that it went through (_settle_unknown_refunds), and a register that repeats
        the request learns it (settle_refund)."""
        for key, _txn in self.journal.pending_reversals():
            if key.startswith(QR_CANCEL_PREFIX):
                if self._qr_client is None:
                    continue
                try:
                    self._qr_client.cancel(key[len(QR_CANCEL_PREFIX) :], "no_answer")
                except QrHostError as exc:
                    log.info("code order cancel still pending: %s", type(exc).__name__)
                    continue
                self.journal.reversal_done(key)
                continue
            if self._acquirer is None:
                continue
            try:
                self._acquirer.reverse(original_idempotency_key=key, reason="lost_response")
            except AcquirerError as exc:
                log.info("reversal still pending: %s", type(exc).__name__)
                # A signed refusal is an answer; an unanswered or refused request is not.
                if isinstance(exc, HostRejectedError):
                    self._link(True)
                else:
                    self._link(False, link_failure(exc))
                continue
            self.journal.reversal_done(key)
            self._link(True)  # the bank acknowledged it: it answers again
        unknown_voids = self._settle_unknown_voids()
        return len(self.journal.pending_reversals()) + len(unknown_voids)

    def recover(self) -> list[TxnRecord]:
        """After a restart: finish what a crash interrupted, truthfully."""
        fixed = [self._recovered(record) for record in self.journal.unfinished()]
        self.retry_reversals()
        return fixed

    def _recovered(self, record: TxnRecord) -> TxnRecord:
        """How a transaction a crash interrupted ends: each in one commit, with the reversal
        or order cancel it owes."""
        if record.offline_id or self.queue.host_ref(record.id)[0]:
            # In the offline queue already (a card's, or a code the parameters allow
            # offline): it will be sent, so it is approved offline, never cancelled.
            return self._finish(
                record, State.APPROVED_OFFLINE, Result.APPROVED_OFFLINE, offline_id=record.id
            )
        if record.qr_order_id:
            # A code payment cut short: cancel its order (reversed if it was paid), so no
            # money is kept for a sale the merchant never saw approved.
            return self._finish(
                record,
                State.CANCELLED,
                Result.CODE_CANCELLED,
                "cancelled",
                reversal_key=QR_CANCEL_PREFIX + record.qr_order_id,
            )
        if record.idempotency_key and record.kind in (Kind.REFUND, Kind.VOID):
            # It may have reached the bank: re-sent under this key before the next refund of
            # the sale (_settle_unknown_refunds), or, a void, by retry_reversals just below.
            return self._finish(
                record,
                State.FAILED,
                Result.REFUND_DECLINED if record.kind is Kind.REFUND else Result.VOID_DECLINED,
                "interrupted; no answer from the bank",
                outcome_unknown=True,
            )
        if record.idempotency_key and record.kind is Kind.SALE:
            # The authorisation may have reached the host: reverse it, never assume.
            return self._finish(
                record,
                State.DECLINED,
                Result.HOST_NO_RESPONSE,
                "interrupted",
                reversal_key=record.idempotency_key,
            )
        return self._finish(record, State.CANCELLED, Result.CANCELLED, "interrupted")
