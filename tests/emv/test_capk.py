"""CA public keys: EMV Book 2 §11.2.2 checksum, parsing and the key store."""

from __future__ import annotations

import json
from datetime import date

import pytest

from emv.capk import CaKeyStore, CapkError, CaPublicKey, parse_ca_key, parse_ca_keys
from emv.errors import EmvError
from simulator.pki import TEST_CA_KEYS_FILE, load_test_ca_store

# Visa's published TEST CA public key, index 92 (1408 bits), with its published checksum:
# a known-answer vector for SHA-1(RID || index || modulus || exponent).
VISA_TEST_92 = {
    "rid": "A000000003",
    "index": "92",
    "modulus": (
        "996AF56F569187D09293C14810450ED8EE3357397B18A2458EFAA92DA3B6DF6514EC060195318FD4"
        "3BE9B8F0CC669E3F844057CBDDF8BDA191BB64473BC8DC9A730DB8F6B4EDE3924186FFD9B8C7735789"
        "C23A36BA0B8AF65372EB57EA5D89E7D14E9C7B6B557460F10885DA16AC923F15AF3758F0F03EBD3C5C"
        "2C949CBA306DB44E6A2C076C5F67E281D7EF56785DC4D75945E491F01918800A9E2DC66F60080566CE"
        "0DAF8D17EAD46AD8E30A247C9F"
    ),
    "exponent": "03",
    "expiry": "2030-12-31",
    "sha1": "429C954A3859CEF91295F663C963E582ED6EB253",
}


def test_checksum_known_answer_for_visa_test_key_92() -> None:
    key = parse_ca_key(VISA_TEST_92)
    assert key.index == 0x92
    assert len(key.modulus) == 176
    assert key.compute_checksum().hex().upper() == VISA_TEST_92["sha1"]
    assert key.verify_checksum()


def test_checksum_detects_a_changed_modulus_byte() -> None:
    key = parse_ca_key(VISA_TEST_92)
    modulus = bytearray(key.modulus)
    modulus[50] ^= 0x01
    tampered = CaPublicKey(key.rid, key.index, bytes(modulus), key.exponent, key.expiry, key.sha1)
    assert not tampered.verify_checksum()


def test_key_without_checksum_does_not_verify() -> None:
    key = parse_ca_key({k: v for k, v in VISA_TEST_92.items() if k != "sha1"})
    assert key.sha1 is None
    assert not key.verify_checksum()


def test_index_may_be_an_int_and_hex_lowercase() -> None:
    raw = dict(VISA_TEST_92, index=0x92, modulus=VISA_TEST_92["modulus"].lower())
    assert parse_ca_key(raw) == parse_ca_key(VISA_TEST_92)


def test_expiry_is_optional() -> None:
    raw = {k: v for k, v in VISA_TEST_92.items() if k != "expiry"}
    assert parse_ca_key(raw).expiry is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"modulus": None}, "modulus"),
        ({"exponent": "0G"}, "exponent"),
        ({"rid": "A0000003"}, "rid"),
        ({"index": "XY"}, "index"),
        ({"index": 300}, "index"),
        ({"index": None}, "index"),
        ({"expiry": "2030-13-01"}, "expiry"),
        ({"sha1": "00" * 20}, "sha1"),
        ({"sha1": "00"}, "sha1"),
        ({"rid": 5}, "rid"),
    ],
)
def test_bad_input_names_the_field(change: dict[str, object], field: str) -> None:
    raw: dict[str, object] = dict(VISA_TEST_92)
    for name, value in change.items():
        if value is None:
            raw.pop(name)
        else:
            raw[name] = value
    with pytest.raises(CapkError) as info:
        parse_ca_key(raw)
    assert info.value.field == field
    assert field in str(info.value)
    assert isinstance(info.value, EmvError)


def test_list_error_says_which_entry() -> None:
    with pytest.raises(CapkError, match="#1") as info:
        parse_ca_keys([VISA_TEST_92, dict(VISA_TEST_92, exponent="")])
    assert info.value.field == "exponent"


def test_store_lookup_refuses_expired_keys() -> None:
    store = CaKeyStore([parse_ca_key(VISA_TEST_92)])
    rid = bytes.fromhex("A000000003")
    assert store.lookup(rid, 0x92, date(2030, 12, 31)) is not None  # valid on its expiry day
    assert store.lookup(rid, 0x92, date(2031, 1, 1)) is None
    assert store.get(rid, 0x92) is not None
    assert store.lookup(rid, 0x94, date(2025, 1, 1)) is None
    assert store.lookup(bytes.fromhex("A000000004"), 0x92, date(2025, 1, 1)) is None
    assert len(store) == 1
    assert next(iter(store)).index == 0x92


def test_store_refuses_a_key_with_a_wrong_checksum() -> None:
    key = parse_ca_key(VISA_TEST_92)
    bad = CaPublicKey(key.rid, key.index, key.modulus, b"\x01\x00\x01", key.expiry, key.sha1)
    with pytest.raises(CapkError) as info:
        CaKeyStore([bad])
    assert info.value.field == "sha1"


def test_shipped_test_ca_keys_load_with_valid_checksums() -> None:
    raw = json.loads(TEST_CA_KEYS_FILE.read_text(encoding="utf-8"))
    assert all("TEST ONLY" in entry["label"] for entry in raw)
    store = load_test_ca_store()
    keys = list(store)
    assert all(k.verify_checksum() for k in keys)
    rids = {k.rid.hex().upper() for k in keys}
    assert rids == {"A000000003", "A000000004"}
    today = date(2025, 6, 1)
    expired = [k for k in keys if k.is_expired(today)]
    assert len(expired) == 1
    assert store.lookup(expired[0].rid, expired[0].index, today) is None
    assert {len(k.modulus) for k in keys} >= {176, 248}
