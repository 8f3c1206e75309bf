"""`pipos params check` on hostile files: each one ends with exit status 2 and one clear line,
never a traceback, a hang or memory exhaustion (issue 16, item 8: a RecursionError traceback on
deep JSON, reading /dev/zero until memory ran out, hanging on a FIFO)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from terminal.cli import main
from terminal.domain.params import MAX_JSON_DEPTH, MAX_PARAMS_BYTES

REPO = Path(__file__).resolve().parents[2]
DEFAULTS = REPO / "terminal" / "data" / "default_params.json"


def _check(path: Path | str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["params", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_deeply_nested_json_is_one_clear_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = tmp_path / "bomb.json"
    bomb.write_text("[" * 100_000 + "]" * 100_000)
    assert f"JSON nested deeper than {MAX_JSON_DEPTH} levels" in _check(bomb, capsys)


def test_brackets_inside_strings_do_not_count_as_nesting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(DEFAULTS.read_text())
    document["_comment"] = '[[[[{"\\"' * 20
    path = tmp_path / "params.json"
    path.write_text(json.dumps(document))
    assert main(["params", "check", str(path)]) == 0


def test_a_device_is_refused_before_it_is_read(capsys: pytest.CaptureFixture[str]) -> None:
    assert "not a regular file (a device)" in _check("/dev/zero", capsys)


def test_an_oversized_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_PARAMS_BYTES + 1))
    assert "too large" in _check(big, capsys)


def test_a_fifo_does_not_hang_the_command(tmp_path: Path) -> None:
    fifo = tmp_path / "params.fifo"
    os.mkfifo(fifo)
    # In a child process, so a regression hangs only the child, which the timeout then ends.
    done = subprocess.run(
        [sys.executable, "-m", "terminal.cli", "params", "check", str(fifo)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert "not a regular file (a FIFO)" in done.stderr
    assert "Traceback" not in done.stderr
