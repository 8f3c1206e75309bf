"""Regression tests for the attacks of issue 16: each keeps one attack from working again."""
