"""The ISO 8583 acquirer link (docs/iso8583.md): the operator's profile (`profile`), messages
to and from bytes with their MAC and framing (`codec`, `mac`), and traces for engineers
(`trace`)."""
