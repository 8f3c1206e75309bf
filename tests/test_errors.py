"""One exception tree: every exception pipos raises is rooted in PiposError, no two classes
share a name, and the tree drawn in emv/errors.py's docstring is the tree in the code."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections import Counter
from types import ModuleType

import emv.errors
from emv.errors import PiposError
from tests.conftest import IN_CI

PACKAGES = ("emv", "drivers", "offline_queue", "terminal", "simulator")


#: The libraries of the optional extras: a module that needs a missing one is left out
#: outside CI (in CI every extra is installed and every module counts).
EXTRA_LIBRARIES = frozenset({"smartcard", "nfc", "serial", "escpos", "usb"})


def _import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if IN_CI or (exc.name or "").split(".")[0] not in EXTRA_LIBRARIES:
            raise
        return None


def _import_everything() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        modules = [root] + [
            module
            for info in pkgutil.walk_packages(root.__path__, package + ".")
            if not info.name.endswith("__main__") and (module := _import(info.name))
        ]
        for module in modules:
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                    found.append(obj)
    return found


def _drawn(cls: type[BaseException], depth: int, lines: list[str]) -> None:
    ours = [s for s in cls.__subclasses__() if s.__module__.split(".")[0] in PACKAGES]
    for sub in sorted(ours, key=lambda k: (k.__module__, k.__name__)):
        lines.append("    " * depth + f"{sub.__name__} ({sub.__module__})")
        _drawn(sub, depth + 1, lines)


def test_every_public_exception_is_rooted_in_pipos_error() -> None:
    outside = [
        f"{cls.__module__}.{cls.__name__}"
        for cls in _import_everything()
        if not issubclass(cls, PiposError) and not cls.__name__.startswith("_")
    ]
    assert outside == []


def test_no_two_exceptions_share_a_name() -> None:
    names = Counter(cls.__name__ for cls in _import_everything() if issubclass(cls, PiposError))
    assert [name for name, count in names.items() if count > 1] == []


def test_the_docstring_draws_the_tree_in_the_code() -> None:
    _import_everything()
    lines = ["PiposError (emv.errors)"]
    _drawn(PiposError, 1, lines)
    doc = emv.errors.__doc__ or ""
    drawn = [line[4:] for line in doc.splitlines() if re.match(r"^    \s*\w+ \([\w.]+\)$", line)]
    assert drawn == lines
