"""TR-31 key blocks for the ISO 8583 link: the standard's own example opens, and a key
block is refused for any use its header does not give it."""

from __future__ import annotations

import psec.tr31
import pytest

from terminal.acquirer.iso8583.keys import KeyBlockRefusedError, unwrap_key_block

# ASC X9 TR-31:2018, A.7.4, example 3: a PIN key (P0, AES) under an AES-256 KBPK.
TR31_KBPK = bytes.fromhex("88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6")
TR31_BLOCK = (
    "D0112P0AE00E0000B82679114F470F540165EDFBF7E250FCEA43F810D215F8D207E2E417C07156A27E8E31"
    "DA05F7425509593D03A457DC34"
)
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def test_the_tr31_2018_example_opens_to_its_key() -> None:
    unwrapped = unwrap_key_block(TR31_KBPK, TR31_BLOCK, "pin")
    assert unwrapped.key.hex().upper() == "3F419E1CB7079442AA37474C2EFBF8B8"
    assert (unwrapped.usage, unwrapped.algorithm, unwrapped.mode_of_use) == ("P0", "A", "E")
    assert "3F419E" not in repr(unwrapped)


def test_a_pin_key_is_never_taken_for_a_mac_key() -> None:
    with pytest.raises(KeyBlockRefusedError, match=r"usage P0 \(TR-31\), not M6"):
        unwrap_key_block(TR31_KBPK, TR31_BLOCK, "mac", mac_algorithm="aes-cmac")


def test_a_block_under_another_key_or_changed_is_refused() -> None:
    with pytest.raises(KeyBlockRefusedError, match="cannot be opened"):
        unwrap_key_block(bytes(32), TR31_BLOCK, "pin")
    changed = TR31_BLOCK[:-1] + ("5" if TR31_BLOCK[-1] != "5" else "6")
    with pytest.raises(KeyBlockRefusedError, match="cannot be opened"):
        unwrap_key_block(TR31_KBPK, changed, "pin")


def test_a_session_mac_key_under_the_tmk_must_fit_the_profile() -> None:
    mac_key = bytes.fromhex("89ABCDEF0123456776543210FEDCBA98")
    block = psec.tr31.wrap(TMK, "B0000M3TC00E0000", mac_key)
    assert unwrap_key_block(TMK, block, "mac", mac_algorithm="iso9797-1-alg3").key == mac_key
    with pytest.raises(KeyBlockRefusedError, match="usage M3"):
        unwrap_key_block(TMK, block, "mac", mac_algorithm="aes-cmac")
    # Verify only (V): the terminal computes the MAC of its own requests too.
    verify_only = psec.tr31.wrap(TMK, "B0000M3TV00E0000", mac_key)
    with pytest.raises(KeyBlockRefusedError, match="mode of use V"):
        unwrap_key_block(TMK, verify_only, "mac", mac_algorithm="iso9797-1-alg3")
