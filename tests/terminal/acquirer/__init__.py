"""Tests of terminal/acquirer/."""
