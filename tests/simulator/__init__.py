"""Tests of simulator/: virtual cards, replay, the simulated host's ledger."""
