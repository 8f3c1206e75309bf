"""Tests of drivers/: over fake libraries in process, then through the real stacks."""
