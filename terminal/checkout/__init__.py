"""The payment flow at the counter: the card loop onto the EMV kernel (`card_session`), code
payments (`qr_payment`) and the checkout itself (`flow`: sale, merchant-presented QR, refund,
void, end of day, recovery, the event hub the API streams). Depends on the acquirer, the
store and the domain; never on the API, the app or the command line."""
