"""Tests of terminal/checkout/."""
