"""`pipos kiosk`: open the checkout page on the terminal's own screen.

The page holds no token: the kiosk earns its session with the one-time code the running
terminal keeps in a file only the terminal's user can read (``DATA_DIR/kiosk-code``, see
``terminal.api.kiosk``). This command reads that code and starts Chromium in kiosk mode on
``http://127.0.0.1:8700/kiosk?code=...``; the terminal then sets the page's session cookie
and a new code replaces the one used. ``--print-url`` only prints the one-time link (for
another browser, or a test).

The page's session ends after hours unused and a day after it was earned
(``terminal.api.kiosk.SESSION_IDLE``, ``SESSION_MAX_AGE``); the page then shows how to open it
again, and running this command again opens it with a fresh code (there is always one in the
file while the terminal runs). This is also the only way the provisioned terminal hands out
a code: ``pipos run --config`` prints this command, never a code, since its output is the
system journal.

Which terminal: ``--config FILE`` (a provisioned one: its data directory), else
``--state-dir DIR`` (what ``pipos run`` was given; default ``~/.local/state/pipos/run``),
or the code file itself with ``--code-file``. Run it as the terminal's user (the file is
0600).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from ..domain.errors import ConfigurationError
from .common import ServiceCommandError

__all__ = ["CHROMIUM_FLAGS", "register"]

#: Chromium on the terminal's screen: full screen with no way out to other pages, no
#: first-run or crash dialogs, no translation bar over the page; the page's tones and spoken
#: amount play even before the first touch (a sale the cash register started).
CHROMIUM_FLAGS = (
    "--kiosk",
    "--autoplay-policy=no-user-gesture-required",
    "--no-first-run",
    "--noerrdialogs",
    "--disable-infobars",
    "--disable-session-crashed-bubble",
    "--disable-translate",
    "--overscroll-history-navigation=0",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kiosk = subparsers.add_parser(
        "kiosk",
        help="open the checkout page in Chromium's kiosk mode (one-time code, no token)",
        description="Read the running terminal's one-time kiosk code (DATA_DIR/kiosk-code, "
        "mode 0600) and start Chromium in kiosk mode on the link that trades it for the "
        "checkout page's session. Run it as the terminal's user. The session ends after "
        "hours unused and a day at most; run this again to open the page anew.",
    )
    which = kiosk.add_mutually_exclusive_group()
    which.add_argument(
        "--config", help="a provisioned terminal's configuration (its data directory)"
    )
    which.add_argument(
        "--state-dir",
        help="the demo terminal's state (as given to pipos run; default ~/.local/state/pipos/run)",
    )
    which.add_argument("--code-file", help="the kiosk code file itself")
    kiosk.add_argument(
        "--url",
        default="http://127.0.0.1:8700",
        help="the terminal's API address (default http://127.0.0.1:8700)",
    )
    kiosk.add_argument(
        "--print-url", action="store_true", help="only print the one-time link; start nothing"
    )
    kiosk.add_argument(
        "--browser", help="the browser to start (default: chromium or chromium-browser on PATH)"
    )
    kiosk.set_defaults(handler=_kiosk_command)


def _code_file(args: argparse.Namespace) -> Path:
    # Imported here, not at the top: `pipos --help` loads every command module, and the API
    # package brings FastAPI with it.
    from ..api.kiosk import CODE_FILE

    if args.code_file:
        return Path(args.code_file)
    if args.config:
        from ..service.config import load_config

        return load_config(Path(args.config)).data_dir / CODE_FILE
    state = Path(args.state_dir or Path.home() / ".local/state/pipos/run")
    return state / "terminal" / CODE_FILE


def _kiosk_command(args: argparse.Namespace) -> int:
    if not args.url.startswith(("http://", "https://")):
        raise ConfigurationError(f"--url {args.url!r}: expected http://HOST:PORT")
    from ..api.kiosk import kiosk_url, read_kiosk_code

    try:
        code = read_kiosk_code(_code_file(args))
    except ConfigurationError as exc:
        # The code file is the running terminal's (missing: it is not running; unreadable or
        # loose: its start went wrong), not what the person typed: a failure, exit status 1.
        raise ServiceCommandError(str(exc), bad_input=False) from exc
    url = kiosk_url(args.url, code)
    if args.print_url:
        print(url, flush=True)
        return 0
    browser = args.browser or shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        raise ServiceCommandError(
            "Chromium is not installed (Debian: apt-get install chromium; Raspberry Pi OS: "
            "chromium-browser); or give --browser, or --print-url for another browser",
            bad_input=False,
        )
    # The browser takes this process's place, so a session manager or systemd that started
    # the kiosk watches the browser itself. The code in its command line is spent by the
    # page's first load.
    try:
        os.execv(browser, [browser, *CHROMIUM_FLAGS, url])  # noqa: S606 (no shell: argv)
    except OSError as exc:
        raise ServiceCommandError(
            f"cannot start {browser}: {exc.strerror}", bad_input=False
        ) from exc
    return 0  # not reached: execv does not return
