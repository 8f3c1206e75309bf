"""Tests of simulator/host/: the simulated acquirer host on a real socket."""
