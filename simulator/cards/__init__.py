"""Virtual contactless EMV cards with real TEST keys, and a strict scripted card.

Stable API (other packages and tests import only these names from ``simulator.cards``)::

    load_card(name_or_path, *, sleep=None, random_bytes=None, **behaviour) -> VirtualCard
    list_profiles() -> list[str]                    # "visa", "mastercard", ...
    load_profile(name_or_path) -> CardProfile
    profile_for_pan(pan) -> CardProfile | None      # for a simulated issuer host

    class VirtualCard:
        atr: bytes; uid: bytes; removed: bool
        power_on() -> bytes (ATR); reset() -> bytes (ATR); remove(); insert()
        transceive(c_apdu: bytes) -> bytes          # response data + SW1 SW2
        profile: CardProfile; behaviour: Behaviour
        atc: int; last_cryptogram: CryptogramType | None
        asked_to_see_phone: bool; verified_on_device: bool   # the see_phone behaviour
        data: dict[int, bytes]                      # personalised data objects by tag
        records: dict[(sfi, record), bytes]         # raw READ RECORD responses (no SW)
        transcript: list[(command, response)]; commands: int; simulated_delay: float

    class ScriptedCard(exchanges, *, atr=..., uid=...):
        transceive(), power_on(), reset(), removed, assert_finished(), remaining
        ScriptedCard.from_transcript([{"command": hex, "response": hex}, ...])
        matchers: prefix("80AE"), ANY, or any callable bytes -> bool

    verify_cryptogram(profile, values) -> bool      # issuer-side ARQC/TC/AAC check

Exceptions (``simulator.cards.errors``, rooted in ``simulator.errors.SimulatorError``):
``CardError`` > ``VirtualCardRemovedError`` (raised by ``transceive``/``power_on`` once the card has
left the field), ``ProfileError``, ``BehaviourError``, ``UnexpectedCommand`` (also an
``AssertionError``). Every other answer, including errors, is a status word.

Commands a :class:`VirtualCard` answers:

* SELECT '2PAY.SYS.DDF01' (PPSE, Book B §3.3.2): FCI 6F{84, A5{BF0C{61{4F 50 87 9F2A}...}}}.
* SELECT AID, first/next occurrence, partial names (Book 1 §11.3): FCI 6F{84, A5{50 87
  9F38? 5F2D 9F11/9F12? BF0C?}}; a blocked application answers its FCI with '6283'.
* GET PROCESSING OPTIONS (Book 3 §6.5.8): the '83' template must be as long as the PDOL
  asks ('6700' otherwise). The ATC is incremented here, once per transaction.
  M/Chip: 77{82 94} (or 80 AIP||AFL with ``response_format`` 1).
  qVSDC (Book C-3): the card decides here and answers 77{82 94 9F36 9F26 9F27? 9F10 9F6C
  57 5F34? 9F6E? [9F4B 9F69]}. 9F27 is left out when the profile says ``return_cid: false``
  (the reader then reads the type from IAD byte 5 bits 6-5). Decision: AAC on ``decline``;
  ARQC when TTQ byte 2 b8 (online cryptogram required) or ``request_online``; TC on
  ``approve_offline``; otherwise card risk management: ARQC when expired, foreign currency,
  amount above ``limits.single_offline``, cumulative offline amount above
  ``limits.cumulative_offline`` or ``limits.consecutive_offline`` reached, else TC. An
  ARQC for an offline-only reader (TTQ byte 1 b4) becomes an AAC. fDDA: with a TC the card
  adds 9F4B (SDAD over 9F37 || 9F02 || 5F2A || 9F69, ICC Dynamic Number = ATC) and 9F69
  ('01' || card UN || CTQ). CTQ: profile ``ctq`` plus byte 2 b8 on ``cdcvm_performed``, or,
  when TTQ byte 2 b7 (CVM required), byte 1 b8 online PIN (ARQC only) / b7 signature per
  ``cvm_preference``. A ``see_phone`` phone not yet verified answers '6986' instead.
* READ RECORD (Book 3 §6.5.11): records 70{...} of the AFL; '6A83' / '6A82' otherwise.
* GENERATE AC (Book 3 §6.5.5): CDOL1 data (first) or CDOL2 data (second, only after an
  ARQC; approves with ARC '00'/'Y1'/'Y3'/'10'/'11'). Never answers a higher type than asked
  (AAC < ARQC < TC); a TC request goes through the same card risk management as above.
  Response 77{9F27 9F36 9F26 9F10} (or format 1 80{CID ATC AC IAD}); with P1 b5 (CDA
  requested), AIP CDA supported and TC/ARQC: 77{9F27 9F36 9F10 9F4B} signed per Book 2
  §6.6.1 (the AC only inside the SDAD; AAC is never signed). A ``see_phone`` phone not yet
  verified answers its first GENERATE AC with an AAC in format 2 with DF4B = '000100'.
* INTERNAL AUTHENTICATE (Book 3 §6.5.9): SDAD over the DDOL data (80 or 77{9F4B}).
* GET DATA 9F36 (ATC), 9F13 (last online ATC), 9F17 (PIN try counter); '6A88' otherwise.

Behaviours: see :mod:`simulator.cards.behaviour`. Cryptograms: :mod:`simulator.cards.crypto`.
Profiles and their JSON format: :mod:`simulator.cards.profile`. All keys are TEST keys.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .behaviour import Behaviour, Corruption, Decision
from .crypto import verify_cryptogram
from .errors import (
    BehaviourError,
    CardError,
    ProfileError,
    UnexpectedCommand,
    VirtualCardRemovedError,
)
from .profile import CardKernel, CardOda, CardProfile, list_profiles, load_profile, profile_for_pan
from .scripted import ANY, ScriptedCard, prefix
from .virtual import VirtualCard

__all__ = [
    "ANY",
    "Behaviour",
    "BehaviourError",
    "CardError",
    "CardKernel",
    "CardOda",
    "CardProfile",
    "Corruption",
    "Decision",
    "ProfileError",
    "ScriptedCard",
    "UnexpectedCommand",
    "VirtualCard",
    "VirtualCardRemovedError",
    "list_profiles",
    "load_card",
    "load_profile",
    "prefix",
    "profile_for_pan",
    "verify_cryptogram",
]


def load_card(
    name_or_path: str | Path,
    *,
    sleep: Callable[[float], None] | None = None,
    random_bytes: Callable[[int], bytes] | None = None,
    **behaviour: Any,
) -> VirtualCard:
    """A fresh card from a shipped profile name or a profile file path.

    ``behaviour`` keywords override the profile's own ``"behaviour"`` object: see
    :mod:`simulator.cards.behaviour` (``approve_offline=True``, ``corrupt="sdad"``, ...).
    ``sleep`` receives the ``slow`` delay before each answer (default: added up in
    ``card.simulated_delay``, no real wait); ``random_bytes(n)`` feeds the card's
    unpredictable numbers (default: deterministic per PAN, so runs are reproducible).
    """
    profile = load_profile(name_or_path)
    merged = Behaviour().updated(profile.behaviour).updated(behaviour)
    return VirtualCard(profile, merged, sleep=sleep, random_bytes=random_bytes)
