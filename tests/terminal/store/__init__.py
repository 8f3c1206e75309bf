"""Tests of terminal/store/."""
