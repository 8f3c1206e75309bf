"""Tests of terminal/: acquirer, checkout, store, service, API and page, command line."""
