"""Tests of emv/: known-answer vectors, scripted cards, recorded transcripts."""
