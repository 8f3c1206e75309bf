"""Tests of terminal/domain/."""
