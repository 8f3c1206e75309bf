"""Terminals registered for ISO 8583 on the simulated host, and their keys, in the host's
ledger (the iso8583_* tables of simulator/host/ledger.py).

A pipos terminal enrolled over the pipos protocol (same ledger) is registered once
(`POST /admin/iso8583/terminals`): it gets a TID (field 41), its merchant's MID (field 42,
one per merchant) and a TMK, issued as a TR-31 block under the KIF's TEST KBPK. Each key
exchange (0800, 70=161) issues fresh session keys under the TMK.

Which MAC keys a request may be MAC'd under: the newest one issued, and the last one the
terminal is known to hold (the newest a request was MAC'd under). The newest becomes the
known one with the first request MAC'd under it, and every older key is retired then. So a
key exchange whose 0810 was lost leaves the terminal's key working, and so does any number
of key exchanges sent by someone who knows a TID (the un-MAC'd 0800 the contract allows
before the terminal has a key), which only ever replace the newest, unconfirmed key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from ..service import AcquirerHost, HostError
from .keys import SESSION_KEY_BYTES, kif_kbpk, open_block, wrap_mac_key, wrap_pin_key, wrap_tmk
from .profile import MacAlgorithm

__all__ = ["IsoTerminal", "SessionKey", "TerminalRegistry"]

#: Opened keys kept in memory, by block (each opening is an AES unwrap and CMAC).
_CACHE_LIMIT: Final = 4096


@dataclass(frozen=True, slots=True)
class IsoTerminal:
    tid: str
    terminal_id: str
    merchant_id: str
    mid: str
    tmk_key_block: str


@dataclass(frozen=True, slots=True)
class SessionKey:
    id: int
    mac_key: bytes = field(repr=False)
    confirmed: bool


class TerminalRegistry:
    """Registration and keys, on the host's store (thread-safe as the store is)."""

    def __init__(self, host: AcquirerHost, *, kbpk: bytes | None = None) -> None:
        self.host = host
        self.store = host.store
        self._kbpk = kbpk if kbpk is not None else kif_kbpk()
        self._opened: dict[str, bytes] = {}

    # --- registration ---------------------------------------------------------------------

    def register(self, terminal_id: str) -> dict[str, Any]:
        """Register an enrolled pipos terminal for ISO 8583; the same answer every time."""
        now = self.host.now()
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT * FROM iso8583_terminals WHERE terminal_id = ?", (terminal_id,)
            ).fetchone()
            if row is None:
                enrolled = conn.execute(
                    "SELECT merchant_id FROM terminals WHERE terminal_id = ?", (terminal_id,)
                ).fetchone()
                if enrolled is None:
                    raise HostError(
                        404, "unknown_terminal", f"terminal {terminal_id} is not enrolled"
                    )
                merchant_id = str(enrolled["merchant_id"])
                mid_row = conn.execute(
                    "SELECT mid FROM iso8583_merchants WHERE merchant_id = ?", (merchant_id,)
                ).fetchone()
                if mid_row is None:
                    count = conn.execute("SELECT COUNT(*) FROM iso8583_merchants").fetchone()[0]
                    mid = f"PM{int(count) + 1:07d}"
                    conn.execute(
                        "INSERT INTO iso8583_merchants (merchant_id, mid) VALUES (?, ?)",
                        (merchant_id, mid),
                    )
                else:
                    mid = str(mid_row["mid"])
                count = conn.execute("SELECT COUNT(*) FROM iso8583_terminals").fetchone()[0]
                tid = f"P{int(count) + 1:07d}"
                block = wrap_tmk(self._kbpk, self.host.token(32))
                conn.execute(
                    "INSERT INTO iso8583_terminals (tid, terminal_id, mid, tmk_key_block, "
                    "registered_at) VALUES (?, ?, ?, ?, ?)",
                    (tid, terminal_id, mid, block, now),
                )
                self.store.add_event(
                    conn, now, terminal_id, None, "iso8583_registered", {"tid": tid, "mid": mid}
                )
                row = conn.execute(
                    "SELECT * FROM iso8583_terminals WHERE tid = ?", (tid,)
                ).fetchone()
        return {
            "terminal_id": terminal_id,
            "tid": row["tid"],
            "mid": row["mid"],
            "tmk_key_block": row["tmk_key_block"],
        }

    def terminal(self, tid: str) -> IsoTerminal | None:
        row = self.store.one(
            "SELECT i.*, t.merchant_id FROM iso8583_terminals i JOIN terminals t "
            "ON t.terminal_id = i.terminal_id WHERE i.tid = ?",
            (tid,),
        )
        if row is None:
            return None
        return IsoTerminal(
            tid=str(row["tid"]),
            terminal_id=str(row["terminal_id"]),
            merchant_id=str(row["merchant_id"]),
            mid=str(row["mid"]),
            tmk_key_block=str(row["tmk_key_block"]),
        )

    def signed_on(self, terminal: IsoTerminal) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE iso8583_terminals SET signed_on_at = ? WHERE tid = ?",
                (self.host.now(), terminal.tid),
            )

    # --- keys -----------------------------------------------------------------------------

    def _open(self, kbpk: bytes, block: str) -> bytes:
        key = self._opened.get(block)
        if key is None:
            if len(self._opened) >= _CACHE_LIMIT:
                self._opened.clear()
            key = self._opened[block] = open_block(kbpk, block)
        return key

    def _tmk(self, terminal: IsoTerminal) -> bytes:
        return self._open(self._kbpk, terminal.tmk_key_block)

    def mac_keys(self, terminal: IsoTerminal, algorithm: MacAlgorithm) -> list[SessionKey]:
        """The keys a request may be MAC'd under, the newest first (module docstring)."""
        rows = self.store.query(
            "SELECT id, mac_key_block, confirmed_at FROM iso8583_session_keys WHERE tid = ? "
            "AND mac_algorithm = ? AND retired_at IS NULL ORDER BY id DESC",
            (terminal.tid, algorithm),
        )
        if not rows:
            return []
        newest, *older = rows
        chosen = [newest]
        if newest["confirmed_at"] is None:
            known = next((r for r in older if r["confirmed_at"] is not None), None)
            if known is not None:
                chosen.append(known)
        tmk = self._tmk(terminal)
        return [
            SessionKey(
                int(r["id"]),
                self._open(tmk, str(r["mac_key_block"])),
                r["confirmed_at"] is not None,
            )
            for r in chosen
        ]

    def confirm(self, terminal: IsoTerminal, key: SessionKey) -> None:
        """A request came MAC'd under `key`: the terminal holds it; older keys retire."""
        if key.confirmed:
            return
        now = self.host.now()
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE iso8583_session_keys SET confirmed_at = ? WHERE id = ?", (now, key.id)
            )
            conn.execute(
                "UPDATE iso8583_session_keys SET retired_at = ? WHERE tid = ? AND id < ? "
                "AND retired_at IS NULL",
                (now, terminal.tid, key.id),
            )

    def exchange(self, terminal: IsoTerminal, algorithm: MacAlgorithm) -> tuple[SessionKey, str]:
        """Fresh session keys: the new MAC key, and field 63 of the 0810 carrying both
        keys as TR-31 blocks under the TMK (``MAC=<block>;PIN=<block>``)."""
        tmk = self._tmk(terminal)
        mac_key = self.host.token(SESSION_KEY_BYTES)
        mac_block = wrap_mac_key(tmk, algorithm, mac_key)
        pin_block = wrap_pin_key(tmk, self.host.token(SESSION_KEY_BYTES))
        now = self.host.now()
        with self.store.transaction() as conn:
            # The keys no request has shown the terminal to hold, but the last one that has,
            # are of no use any more: the new one replaces them.
            known = conn.execute(
                "SELECT MAX(id) FROM iso8583_session_keys WHERE tid = ? "
                "AND confirmed_at IS NOT NULL",
                (terminal.tid,),
            ).fetchone()[0]
            conn.execute(
                "UPDATE iso8583_session_keys SET retired_at = ? WHERE tid = ? "
                "AND retired_at IS NULL AND id IS NOT ?",
                (now, terminal.tid, known),
            )
            cursor = conn.execute(
                "INSERT INTO iso8583_session_keys (tid, mac_algorithm, mac_key_block, "
                "pin_key_block, issued_at) VALUES (?, ?, ?, ?, ?)",
                (terminal.tid, algorithm, mac_block, pin_block, now),
            )
            key_id = int(cursor.lastrowid or 0)
            self.store.add_event(
                conn, now, terminal.terminal_id, None, "iso8583_key_exchange", {"tid": terminal.tid}
            )
        self._opened[mac_block] = mac_key
        return SessionKey(key_id, mac_key, False), f"MAC={mac_block};PIN={pin_block}"
