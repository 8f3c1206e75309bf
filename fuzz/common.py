"""Shared harness plumbing: run a target under atheris, accepting only pipos' own errors."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import contextlib  # noqa: E402

import atheris  # noqa: E402

from emv.errors import PiposError  # noqa: E402

Target = Callable[[bytes], object]


def guarded(target: Target) -> Callable[[bytes], None]:
    """The project's errors are fine answers to bad input; anything else is a finding."""

    def run(data: bytes) -> None:
        with contextlib.suppress(PiposError):
            target(data)

    return run


def main(target: Target) -> None:
    # Coverage feedback for everything the harness imported (pipos and its parsers).
    atheris.instrument_all()
    atheris.Setup(sys.argv, guarded(target))
    atheris.Fuzz()
