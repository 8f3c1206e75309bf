"""The local HTTP API for the cash register and the kiosk page (`web/`), and the running
terminal served over it (`stack`)."""
