"""The simulated ISO 8583 host: the JSON host's ledger, decisions, ARQC/ARPC verification
and fault board, spoken over ISO 8583 on TCP (docs/iso8583.md, "The link, message by
message").

    profile    the acquirer's field specification, read from the terminal's profile file
    mac        ISO 9797-1 MAC algorithm 3 and AES-CMAC, written from the standards
    codec      messages to and from bytes (pyiso8583), the MAC field, the framing
    keys       TR-31 key blocks: the KIF TEST KBPK, the TMK, the session keys
    terminals  terminals registered for ISO 8583 (TID, MID, TMK) and their session keys
    handlers   each message mapped onto AcquirerHost, exactly once
    server     the asyncio TCP (TLS) server and its faults

It never imports the terminal: the profile is read as a file, and the codec is this
package's own, so the terminal's and the host's implementations check each other.
"""

from __future__ import annotations

from .handlers import Iso8583Host, Reply, answer_mti
from .profile import HostProfile, default_profile_path, load_profile
from .server import FAULT_PREFIX, Iso8583Server, server_ssl_context
from .terminals import TerminalRegistry

__all__ = [
    "FAULT_PREFIX",
    "HostProfile",
    "Iso8583Host",
    "Iso8583Server",
    "Reply",
    "TerminalRegistry",
    "answer_mti",
    "default_profile_path",
    "load_profile",
    "server_ssl_context",
]
