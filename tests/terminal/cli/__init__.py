"""Tests of terminal/cli/."""
