"""The tag dictionary: EMV Book 3 Annex A, and the contactless tags of Books C-2 and C-3.

Each entry gives the name, the format (Book 3 §4.3: `n` numeric BCD, `cn` compressed
numeric, `an` alphanumeric, `ans` alphanumeric special, `b` binary), where the data comes
from, and whether it is sensitive cardholder data that must never be logged in the clear
(PAN, track data, cardholder name, PIN data: PCI DSS 3.2-3.4).
Where Books C-2 (Mastercard) and C-3 (Visa) give one tag two meanings, both are named.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Format(StrEnum):
    NUMERIC = "n"
    COMPRESSED_NUMERIC = "cn"
    ALPHANUMERIC = "an"
    ALPHANUMERIC_SPECIAL = "ans"
    BINARY = "b"


class Source(StrEnum):
    ICC = "card"
    TERMINAL = "terminal"
    ISSUER = "issuer"
    KERNEL = "kernel"


@dataclass(frozen=True, slots=True)
class TagInfo:
    tag: int
    name: str
    format: Format
    source: Source
    sensitive: bool = False


N, CN, AN, ANS, B = (
    Format.NUMERIC,
    Format.COMPRESSED_NUMERIC,
    Format.ALPHANUMERIC,
    Format.ALPHANUMERIC_SPECIAL,
    Format.BINARY,
)
ICC, TERM, ISS, KERN = Source.ICC, Source.TERMINAL, Source.ISSUER, Source.KERNEL

_ENTRIES: Final[tuple[TagInfo, ...]] = (
    # EMV Book 3 Annex A1
    TagInfo(0x42, "Issuer Identification Number (IIN)", N, ICC),
    TagInfo(0x4F, "Application Dedicated File (ADF) Name", B, ICC),
    TagInfo(0x50, "Application Label", ANS, ICC),
    TagInfo(0x56, "Track 1 Data", ANS, ICC, sensitive=True),
    TagInfo(0x57, "Track 2 Equivalent Data", B, ICC, sensitive=True),
    TagInfo(0x5A, "Application Primary Account Number (PAN)", CN, ICC, sensitive=True),
    TagInfo(0x5F20, "Cardholder Name", ANS, ICC, sensitive=True),
    TagInfo(0x5F24, "Application Expiration Date", N, ICC),
    TagInfo(0x5F25, "Application Effective Date", N, ICC),
    TagInfo(0x5F28, "Issuer Country Code", N, ICC),
    TagInfo(0x5F2A, "Transaction Currency Code", N, TERM),
    TagInfo(0x5F2D, "Language Preference", AN, ICC),
    TagInfo(0x5F30, "Service Code", N, ICC),
    TagInfo(0x5F34, "Application PAN Sequence Number", N, ICC),
    TagInfo(0x5F36, "Transaction Currency Exponent", N, TERM),
    TagInfo(0x5F50, "Issuer URL", ANS, ICC),
    TagInfo(0x5F53, "International Bank Account Number (IBAN)", B, ICC),
    TagInfo(0x5F54, "Bank Identifier Code (BIC)", B, ICC),
    TagInfo(0x5F55, "Issuer Country Code (alpha2 format)", AN, ICC),
    TagInfo(0x5F56, "Issuer Country Code (alpha3 format)", AN, ICC),
    TagInfo(0x5F57, "Account Type", N, TERM),
    TagInfo(0x61, "Application Template", B, ICC),
    TagInfo(0x6F, "File Control Information (FCI) Template", B, ICC),
    TagInfo(0x70, "READ RECORD Response Message Template", B, ICC),
    TagInfo(0x71, "Issuer Script Template 1", B, ISS),
    TagInfo(0x72, "Issuer Script Template 2", B, ISS),
    TagInfo(0x73, "Directory Discretionary Template", B, ICC),
    TagInfo(0x77, "Response Message Template Format 2", B, ICC),
    TagInfo(0x80, "Response Message Template Format 1", B, ICC),
    TagInfo(0x81, "Amount, Authorised (Binary)", B, TERM),
    TagInfo(0x82, "Application Interchange Profile", B, ICC),
    TagInfo(0x83, "Command Template", B, TERM),
    TagInfo(0x84, "Dedicated File (DF) Name", B, ICC),
    TagInfo(0x86, "Issuer Script Command", B, ISS),
    TagInfo(0x87, "Application Priority Indicator", B, ICC),
    TagInfo(0x88, "Short File Identifier (SFI)", B, ICC),
    TagInfo(0x89, "Authorisation Code", ANS, ISS),
    TagInfo(0x8A, "Authorisation Response Code", AN, ISS),
    TagInfo(0x8C, "Card Risk Management Data Object List 1 (CDOL1)", B, ICC),
    TagInfo(0x8D, "Card Risk Management Data Object List 2 (CDOL2)", B, ICC),
    TagInfo(0x8E, "Cardholder Verification Method (CVM) List", B, ICC),
    TagInfo(0x8F, "Certification Authority Public Key Index", B, ICC),
    TagInfo(0x90, "Issuer Public Key Certificate", B, ICC),
    TagInfo(0x91, "Issuer Authentication Data", B, ISS),
    TagInfo(0x92, "Issuer Public Key Remainder", B, ICC),
    TagInfo(0x93, "Signed Static Application Data", B, ICC),
    TagInfo(0x94, "Application File Locator (AFL)", B, ICC),
    TagInfo(0x95, "Terminal Verification Results", B, TERM),
    TagInfo(0x97, "Transaction Certificate Data Object List (TDOL)", B, ICC),
    TagInfo(0x98, "Transaction Certificate (TC) Hash Value", B, TERM),
    TagInfo(0x99, "Transaction Personal Identification Number (PIN) Data", B, TERM, True),
    TagInfo(0x9A, "Transaction Date", N, TERM),
    TagInfo(0x9B, "Transaction Status Information", B, TERM),
    TagInfo(0x9C, "Transaction Type", N, TERM),
    TagInfo(0x9D, "Directory Definition File (DDF) Name", B, ICC),
    TagInfo(0x9F01, "Acquirer Identifier", N, TERM),
    TagInfo(0x9F02, "Amount, Authorised (Numeric)", N, TERM),
    TagInfo(0x9F03, "Amount, Other (Numeric)", N, TERM),
    TagInfo(0x9F04, "Amount, Other (Binary)", B, TERM),
    TagInfo(0x9F05, "Application Discretionary Data", B, ICC),
    TagInfo(0x9F06, "Application Identifier (AID) - terminal", B, TERM),
    TagInfo(0x9F07, "Application Usage Control", B, ICC),
    TagInfo(0x9F08, "Application Version Number (card)", B, ICC),
    TagInfo(0x9F09, "Application Version Number (terminal)", B, TERM),
    TagInfo(0x9F0B, "Cardholder Name Extended", ANS, ICC, sensitive=True),
    TagInfo(0x9F0D, "Issuer Action Code - Default", B, ICC),
    TagInfo(0x9F0E, "Issuer Action Code - Denial", B, ICC),
    TagInfo(0x9F0F, "Issuer Action Code - Online", B, ICC),
    TagInfo(0x9F10, "Issuer Application Data", B, ICC),
    TagInfo(0x9F11, "Issuer Code Table Index", N, ICC),
    TagInfo(0x9F12, "Application Preferred Name", ANS, ICC),
    TagInfo(0x9F13, "Last Online Application Transaction Counter (ATC) Register", B, ICC),
    TagInfo(0x9F14, "Lower Consecutive Offline Limit", B, ICC),
    TagInfo(0x9F15, "Merchant Category Code", N, TERM),
    TagInfo(0x9F16, "Merchant Identifier", ANS, TERM),
    TagInfo(0x9F17, "Personal Identification Number (PIN) Try Counter", B, ICC),
    TagInfo(0x9F18, "Issuer Script Identifier", B, ISS),
    TagInfo(0x9F19, "Token Requestor ID", N, ICC),
    TagInfo(0x9F1A, "Terminal Country Code", N, TERM),
    TagInfo(0x9F1B, "Terminal Floor Limit", B, TERM),
    TagInfo(0x9F1C, "Terminal Identification", AN, TERM),
    TagInfo(0x9F1D, "Terminal Risk Management Data", B, TERM),
    TagInfo(0x9F1E, "Interface Device (IFD) Serial Number", AN, TERM),
    TagInfo(0x9F1F, "Track 1 Discretionary Data", ANS, ICC, sensitive=True),
    TagInfo(0x9F20, "Track 2 Discretionary Data", CN, ICC, sensitive=True),
    TagInfo(0x9F21, "Transaction Time", N, TERM),
    TagInfo(0x9F22, "Certification Authority Public Key Index (terminal)", B, TERM),
    TagInfo(0x9F23, "Upper Consecutive Offline Limit", B, ICC),
    TagInfo(0x9F24, "Payment Account Reference (PAR)", AN, ICC),
    TagInfo(0x9F25, "Last 4 Digits of PAN", N, ICC),
    TagInfo(0x9F26, "Application Cryptogram", B, ICC),
    TagInfo(0x9F27, "Cryptogram Information Data", B, ICC),
    TagInfo(0x9F2A, "Kernel Identifier", B, ICC),
    TagInfo(0x9F2D, "ICC PIN Encipherment Public Key Certificate", B, ICC),
    TagInfo(0x9F2E, "ICC PIN Encipherment Public Key Exponent", B, ICC),
    TagInfo(0x9F2F, "ICC PIN Encipherment Public Key Remainder", B, ICC),
    TagInfo(0x9F32, "Issuer Public Key Exponent", B, ICC),
    TagInfo(0x9F33, "Terminal Capabilities", B, TERM),
    TagInfo(0x9F34, "Cardholder Verification Method (CVM) Results", B, TERM),
    TagInfo(0x9F35, "Terminal Type", N, TERM),
    TagInfo(0x9F36, "Application Transaction Counter (ATC)", B, ICC),
    TagInfo(0x9F37, "Unpredictable Number", B, TERM),
    TagInfo(0x9F38, "Processing Options Data Object List (PDOL)", B, ICC),
    TagInfo(0x9F39, "Point-of-Service (POS) Entry Mode", N, TERM),
    TagInfo(0x9F3A, "Amount, Reference Currency", B, TERM),
    TagInfo(0x9F3B, "Application Reference Currency", N, ICC),
    TagInfo(0x9F3C, "Transaction Reference Currency Code", N, TERM),
    TagInfo(0x9F3D, "Transaction Reference Currency Exponent", N, TERM),
    TagInfo(0x9F40, "Additional Terminal Capabilities", B, TERM),
    TagInfo(0x9F41, "Transaction Sequence Counter", N, TERM),
    TagInfo(0x9F42, "Application Currency Code", N, ICC),
    TagInfo(0x9F43, "Application Reference Currency Exponent", N, ICC),
    TagInfo(0x9F44, "Application Currency Exponent", N, ICC),
    TagInfo(0x9F45, "Data Authentication Code", B, ICC),
    TagInfo(0x9F46, "ICC Public Key Certificate", B, ICC),
    TagInfo(0x9F47, "ICC Public Key Exponent", B, ICC),
    TagInfo(0x9F48, "ICC Public Key Remainder", B, ICC),
    TagInfo(0x9F49, "Dynamic Data Authentication Data Object List (DDOL)", B, ICC),
    TagInfo(0x9F4A, "Static Data Authentication Tag List", B, ICC),
    TagInfo(0x9F4B, "Signed Dynamic Application Data", B, ICC),
    TagInfo(0x9F4C, "ICC Dynamic Number", B, ICC),
    TagInfo(0x9F4D, "Log Entry", B, ICC),
    TagInfo(0x9F4E, "Merchant Name and Location", ANS, TERM),
    TagInfo(0x9F4F, "Log Format", B, ICC),
    TagInfo(0xA5, "File Control Information (FCI) Proprietary Template", B, ICC),
    TagInfo(0xBF0C, "File Control Information (FCI) Issuer Discretionary Data", B, ICC),
    # Contactless: EMV Book C-2 (Mastercard) and Book C-3 (Visa)
    TagInfo(0x9F50, "Offline Accumulator Balance", B, ICC),
    TagInfo(0x9F51, "DRDOL", B, ICC),
    TagInfo(0x9F53, "Transaction Category Code", AN, TERM),
    TagInfo(0x9F54, "DS ODS Card", B, ICC),
    TagInfo(0x9F5A, "Application Program Identifier (C-3)", B, ICC),
    TagInfo(0x9F5B, "DSDOL", B, ICC),
    TagInfo(0x9F5C, "DS Requested Operator ID", B, TERM),
    TagInfo(
        0x9F5D,
        "Available Offline Spending Amount (C-3) / Application Capabilities Information (C-2)",
        B,
        ICC,
    ),
    TagInfo(0x9F5E, "DS ID", B, ICC),
    TagInfo(0x9F5F, "DS Slot Availability", B, ICC),
    TagInfo(0x9F60, "CVC3 (Track1)", B, ICC),
    TagInfo(0x9F61, "CVC3 (Track2)", B, ICC),
    TagInfo(0x9F62, "PCVC3 (Track1)", B, ICC),
    TagInfo(0x9F63, "PUNATC (Track1)", B, ICC),
    TagInfo(0x9F64, "NATC (Track1)", B, ICC),
    TagInfo(0x9F65, "PCVC3 (Track2)", B, ICC),
    TagInfo(0x9F66, "Terminal Transaction Qualifiers (C-3) / PUNATC (Track2) (C-2)", B, TERM),
    TagInfo(0x9F67, "NATC (Track2)", B, ICC),
    TagInfo(0x9F68, "Card Additional Processes (C-3)", B, ICC),
    TagInfo(0x9F69, "Card Authentication Related Data (C-3) / UDOL (C-2)", B, ICC),
    TagInfo(0x9F6A, "Unpredictable Number (Numeric)", N, TERM),
    TagInfo(0x9F6B, "Track 2 Data (C-2) / Card CVM Limit (C-3)", B, ICC, sensitive=True),
    TagInfo(0x9F6C, "Card Transaction Qualifiers (C-3) / Mag-stripe AVN (C-2)", B, ICC),
    TagInfo(0x9F6D, "Mag-stripe Application Version Number (Reader)", B, TERM),
    TagInfo(0x9F6E, "Form Factor Indicator (C-3) / Third Party Data (C-2)", B, ICC),
    TagInfo(0x9F6F, "DS Slot Management Control", B, ICC),
    TagInfo(0x9F70, "Protected Data Envelope 1", B, ICC),
    TagInfo(0x9F75, "Unprotected Data Envelope 1", B, ICC),
    TagInfo(0x9F7C, "Customer Exclusive Data (C-3) / Merchant Custom Data (C-2)", B, ICC),
    TagInfo(0x9F7D, "DS Summary 1", B, ICC),
    TagInfo(0x9F7E, "Mobile Support Indicator", B, TERM),
    TagInfo(0x9F7F, "DS Unpredictable Number", B, TERM),
    TagInfo(0xBF0D, "FCI Issuer Discretionary Data (proprietary, C-2)", B, ICC),
    TagInfo(0xDF4B, "POS Cardholder Interaction Information (C-2)", B, ICC),
    TagInfo(0xDF8104, "Balance Read Before Gen AC", N, KERN),
    TagInfo(0xDF8105, "Balance Read After Gen AC", N, KERN),
    TagInfo(0xDF8106, "Data Needed", B, KERN),
    TagInfo(0xDF8107, "CDOL1 Related Data", B, KERN),
    TagInfo(0xDF8108, "DS AC Type", B, KERN),
    TagInfo(0xDF810C, "Kernel ID", B, KERN),
    TagInfo(0xDF810D, "DSVN Term", B, KERN),
    TagInfo(0xDF8111, "PDOL Related Data", B, KERN),
    TagInfo(0xDF8112, "Tags To Read", B, KERN),
    TagInfo(0xDF8115, "Error Indication", B, KERN),
    TagInfo(0xDF8116, "User Interface Request Data", B, KERN),
    TagInfo(0xDF8117, "Card Data Input Capability", B, TERM),
    TagInfo(0xDF8118, "CVM Capability - CVM Required", B, TERM),
    TagInfo(0xDF8119, "CVM Capability - No CVM Required", B, TERM),
    TagInfo(0xDF811A, "Default UDOL", B, TERM),
    TagInfo(0xDF811B, "Kernel Configuration", B, TERM),
    TagInfo(0xDF811C, "Max Lifetime of Torn Transaction Log Record", B, TERM),
    TagInfo(0xDF811D, "Max Number of Torn Transaction Log Records", B, TERM),
    TagInfo(0xDF811E, "Mag-stripe CVM Capability - CVM Required", B, TERM),
    TagInfo(0xDF811F, "Security Capability", B, TERM),
    TagInfo(0xDF8120, "Terminal Action Code - Default", B, TERM),
    TagInfo(0xDF8121, "Terminal Action Code - Denial", B, TERM),
    TagInfo(0xDF8122, "Terminal Action Code - Online", B, TERM),
    TagInfo(0xDF8123, "Reader Contactless Floor Limit", N, TERM),
    TagInfo(0xDF8124, "Reader Contactless Transaction Limit (No On-device CVM)", N, TERM),
    TagInfo(0xDF8125, "Reader Contactless Transaction Limit (On-device CVM)", N, TERM),
    TagInfo(0xDF8126, "Reader CVM Required Limit", N, TERM),
    TagInfo(0xDF8127, "Time Out Value", B, TERM),
    TagInfo(0xDF8128, "IDS Status", B, KERN),
    TagInfo(0xDF8129, "Outcome Parameter Set", B, KERN),
    TagInfo(0xDF812A, "DD Card (Track1)", ANS, KERN),
    TagInfo(0xDF812B, "DD Card (Track2)", B, KERN),
    TagInfo(0xDF812C, "Mag-stripe CVM Capability - No CVM Required", B, TERM),
    TagInfo(0xDF812D, "Message Hold Time", N, TERM),
)

TAGS: Final[dict[int, TagInfo]] = {entry.tag: entry for entry in _ENTRIES}


def describe(tag: int) -> TagInfo | None:
    return TAGS.get(tag)


def is_sensitive(tag: int) -> bool:
    info = TAGS.get(tag)
    return info is not None and info.sensitive
