"""What a payment is, with no I/O: transaction records, money, parameters, what the merchant
and the customer are told (en, zh), receipts, the merchant-presented QR payload, the signed
message envelope, log redaction and the package's exception root. Imports nothing else of
the terminal."""
