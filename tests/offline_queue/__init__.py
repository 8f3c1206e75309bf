"""Tests of offline_queue/: real SQLite files, state machines, SIGKILL."""
