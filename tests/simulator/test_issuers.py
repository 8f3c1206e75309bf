"""The simulated issuer knows the virtual cards' issuer master keys unless told otherwise."""

from __future__ import annotations

from simulator.cards import list_profiles, load_profile
from simulator.host.issuers import virtual_issuer_keys
from tests.conftest_host import HostHandle


def test_every_virtual_card_has_its_issuer_key_by_default() -> None:
    keys = virtual_issuer_keys()
    for name in list_profiles():
        profile = load_profile(name)
        assert keys[profile.pan]["imk_ac"] == profile.issuer_master_key.hex()
    assert {k["session_key"] for k in keys.values()} == {"common", "mastercard"}


def test_an_operator_s_keys_replace_the_defaults_and_none_means_none(
    inprocess_host: HostHandle,
) -> None:
    service = inprocess_host.app.host
    visa = load_profile("visa").pan
    assert service._issuer_key(visa) is not None  # the default
    inprocess_host.set_issuer_key("999999", bytes(16))
    assert service._issuer_key(visa) is None  # replaced, not merged
    service.set_issuer_keys({})
    assert service._issuer_key(visa) is None  # explicitly none: approve unchecked
