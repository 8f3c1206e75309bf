"""EMVCo QR codes (consumer- and merchant-presented) and wallet payment codes."""

from __future__ import annotations

from .classify import ScannedCode, UnrecognisedCodeError, classify
from .cpm import ConsumerPresentedCode, CpmAccount, CpmApplication, decode_cpm, encode_cpm
from .errors import CpmError, MpmError, QrError, WalletCodeError
from .mpm import (
    LanguageTemplate,
    MerchantPayload,
    MpmField,
    build_merchant_payload,
    crc16_ccitt_false,
    encode_mpm,
    parse_mpm,
)
from .wallet import WalletCode, WalletCodeTable, WalletScheme

__all__ = [
    "ConsumerPresentedCode",
    "CpmAccount",
    "CpmApplication",
    "CpmError",
    "LanguageTemplate",
    "MerchantPayload",
    "MpmError",
    "MpmField",
    "QrError",
    "ScannedCode",
    "UnrecognisedCodeError",
    "WalletCode",
    "WalletCodeError",
    "WalletCodeTable",
    "WalletScheme",
    "build_merchant_payload",
    "classify",
    "crc16_ccitt_false",
    "decode_cpm",
    "encode_cpm",
    "encode_mpm",
    "parse_mpm",
]
