"""Tests of terminal/api/."""
