"""The terminal application: parameters, keys, checkout, acquirer client, CLI."""
