"""The `terminal` package's exception tree."""

from __future__ import annotations

from emv.errors import PiposError


class TerminalError(PiposError):
    """Root of the `terminal` package's exceptions."""


class ConfigurationError(TerminalError):
    """A parameter or configuration file is missing or invalid."""


#: What to install when a command needs the simulator: pipos-sim, the `sim` extra, which a
#: terminal's install (`pip install .`, `scripts/bootstrap.sh pcsc,nfc,serial,printer`)
#: leaves out. drivers.sim says the same for a `sim:` reader URL.
SIMULATOR_INSTALL_HINT = (
    "install the sim extra (pipos[sim], the pipos-sim distribution): scripts/bootstrap.sh sim, "
    "as make run does, or pip install ./sim from the pipos repository"
)


def simulator_missing(exc: ImportError) -> bool:
    """Whether `exc` says the simulator itself is not installed (rather than a module the
    installed simulator needs, which stays an ImportError with its traceback)."""
    name = exc.name or ""
    return name == "simulator" or name.startswith("simulator.")


def simulator_not_installed(needed_by: str, note: str = "") -> str:
    """The message for a person whose command needs the simulator that is not installed."""
    message = f"the simulator is not installed, and {needed_by} needs it; {SIMULATOR_INSTALL_HINT}"
    return f"{message}. {note}" if note else message
