"""Fixture plugins: the real components tests start (pcscd + vpcd, nfcpy udp, pty pairs, the
simulated acquirer host on 127.0.0.1)."""

pytest_plugins = ["tests.conftest_hardware", "tests.conftest_host"]
