"""A register's webhook for final transaction states (issue 18 item 5): routes. Being written."""

from __future__ import annotations

from fastapi import FastAPI

from .settings import RouteKit


def install(app: FastAPI, kit: RouteKit) -> None:
    """Adds this module's routes to `app`."""
    del app, kit
