"""The ISO 8583 acquirer link (docs/iso8583.md): the operator's profile (`profile`), messages
to and from bytes with their MAC and framing (`codec`, `mac`), each message field by field
(`messages`), TR-31 key blocks (`keys`), one TCP/TLS connection (`connection`), what each
response code means (`responses`), the link the checkout uses (`link`), and traces for
engineers (`trace`)."""
