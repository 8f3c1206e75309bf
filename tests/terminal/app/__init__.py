"""Tests of terminal/app/."""
