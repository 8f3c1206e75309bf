"""The terminal's link to its acquirer: the signed pipos protocol client (`docs/protocol.md`),
the code-payment endpoints, and the offline queue's uplink."""
