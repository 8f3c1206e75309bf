"""The per-transaction reconciliation report, terminal vs host: routes (being written)."""

from __future__ import annotations

from fastapi import FastAPI

from .settings import RouteKit


def install(app: FastAPI, kit: RouteKit) -> None:
    """Adds this module's routes to `app`."""
    del app, kit
