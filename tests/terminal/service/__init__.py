"""Tests of terminal/service/."""
