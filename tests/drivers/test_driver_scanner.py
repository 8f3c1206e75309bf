"""Serial code scanners: framing rules, and the real pyserial driver through a pty pair."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("serial", reason="pyserial is not installed (pip install 'pipos[serial]')")

from drivers.errors import (
    CancelledError,
    DeviceUnavailableError,
    ReaderGoneError,
    ReaderTimeoutError,
    UnknownSchemeError,
)
from drivers.scanner import LineFramer, ScanRejectedError, open_scanner
from simulator.bridges.pty_scanner import PtyScanner

QR = "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京540523.7253031565502016233030412340603***0708A60086670902ME91320016A0112233449988770708123456786304A13A"


def _codes(framer: LineFramer, data: bytes) -> list[object]:
    return [
        str(item) if isinstance(item, ScanRejectedError) else item for item in framer.feed(data)
    ]


@pytest.mark.parametrize("terminator", [b"\r", b"\n", b"\r\n"])
def test_any_terminator_frames_one_code(terminator: bytes) -> None:
    framer = LineFramer()
    assert framer.feed(b"ABC" + terminator + b"DEF" + terminator) == ["ABC", "DEF"]
    assert framer.pending == 0


def test_crlf_split_across_reads_is_one_terminator() -> None:
    framer = LineFramer(suffix="CRLF")
    assert framer.feed(b"ABC\r") == ["ABC"]
    assert framer.feed(b"\nDEF\r\n") == ["DEF"]


def test_stx_etx_prefix_and_aim_identifier_are_stripped() -> None:
    framer = LineFramer(prefix=b"PFX")
    assert framer.feed(b"\x02]Q1hello\x03\r") == ["hello"]
    assert framer.feed(b"PFX]C0world\r") == ["world"]
    assert LineFramer(strip_aim=False).feed(b"]Q1x\r") == ["]Q1x"]


def test_utf8_qr_content_survives() -> None:
    assert LineFramer().feed(QR.encode() + b"\r") == [QR]


def test_gs1_group_separator_is_kept() -> None:
    assert LineFramer().feed(b"]C1010123456789012815\x1d10ABC\r") == ["010123456789012815\x1d10ABC"]


def test_garbage_is_rejected_with_the_reason() -> None:
    framer = LineFramer()
    assert _codes(framer, b"\xff\xfe\r") == ["not UTF-8 text (byte 0xFF at offset 0)"]
    assert _codes(framer, b"AB\x07C\r") == ["control character 0x07 at offset 2"]


def test_megabyte_line_is_rejected_without_holding_it() -> None:
    framer = LineFramer(max_length=4096)
    chunk = b"A" * 65536
    for _ in range(16):
        assert framer.feed(chunk) == []
        assert len(framer._buffer) <= 4096  # memory stays bounded
    assert _codes(framer, b"\r") == ["code too long: 1048576 bytes, the limit is 4096"]
    assert framer.feed(b"OK\r") == ["OK"]


def test_idle_gap_framing_and_partial_rejection() -> None:
    framer = LineFramer(suffix="NONE")
    assert framer.feed(b"ABC") == []
    assert framer.flush() == ["ABC"]
    framer = LineFramer(suffix="CR")
    framer.feed(b"HALF")
    rejected = framer.reject_partial()
    assert rejected is not None
    assert "partial code: 4 bytes" in str(rejected)


def test_codes_through_a_pty(pty_scanner: PtyScanner) -> None:
    with open_scanner(f"serial:{pty_scanner.path}?baud=115200&suffix=CR") as scanner:
        pty_scanner.type_code("hello")
        assert scanner.wait_for_code(timeout=10) == "hello"
        pty_scanner.type_code(QR, prefix=b"\x02]Q1")
        assert scanner.wait_for_code(timeout=10) == QR
        pty_scanner.write(b"one\rtwo\r")
        assert scanner.wait_for_code(timeout=10) == "one"
        assert scanner.wait_for_code(timeout=10) == "two"


def test_idle_gap_through_a_pty(pty_scanner: PtyScanner) -> None:
    with open_scanner(f"serial:{pty_scanner.path}?suffix=NONE&idle=0.05") as scanner:
        pty_scanner.write(b"no terminator")
        assert scanner.wait_for_code(timeout=10) == "no terminator"


def test_oversized_and_garbage_through_a_pty(pty_scanner: PtyScanner) -> None:
    with open_scanner(f"serial:{pty_scanner.path}?max=64") as scanner:
        writer = threading.Thread(target=pty_scanner.write, args=(b"X" * (1 << 20) + b"\r",))
        writer.start()
        with pytest.raises(ScanRejectedError, match="code too long: 1048576 bytes"):
            scanner.wait_for_code(timeout=30)
        writer.join()
        pty_scanner.write(b"\xc3\x28\r")
        with pytest.raises(ScanRejectedError, match="not UTF-8"):
            scanner.wait_for_code(timeout=10)
        pty_scanner.type_code("fine")
        assert scanner.wait_for_code(timeout=10) == "fine"


def test_partial_line_is_rejected(pty_scanner: PtyScanner) -> None:
    with open_scanner(f"serial:{pty_scanner.path}?suffix=CR&partial=0.1") as scanner:
        pty_scanner.write(b"HALF")
        with pytest.raises(ScanRejectedError, match="partial code"):
            scanner.wait_for_code(timeout=10)


def test_trigger_command_is_sent(pty_scanner: PtyScanner) -> None:
    with open_scanner(f"serial:{pty_scanner.path}?trigger=16540D&untrigger=16550D") as scanner:
        with pytest.raises(ReaderTimeoutError):
            scanner.wait_for_code(timeout=0.1)
        # The pty may deliver the trigger and the untrigger as separate reads.
        expected = bytes.fromhex("16540D16550D")
        sent = b""
        deadline = time.monotonic() + 5
        while len(sent) < len(expected) and time.monotonic() < deadline:
            sent += pty_scanner.read_sent()
            time.sleep(0.01)
        assert sent == expected


def test_timeout_and_cancel(pty_scanner: PtyScanner) -> None:
    with open_scanner(f"serial:{pty_scanner.path}") as scanner:
        with pytest.raises(ReaderTimeoutError, match="no code scanned"):
            scanner.wait_for_code(timeout=0.1)
        cancel = threading.Event()
        threading.Timer(0.1, cancel.set).start()
        with pytest.raises(CancelledError):
            scanner.wait_for_code(timeout=30, cancel=cancel)


@pytest.mark.integration
def test_unplug_is_reader_gone_and_replug_reconnects(tmp_path: Path) -> None:
    first = PtyScanner()
    link = tmp_path / "scanner"  # a stable name, like /dev/serial/by-id/...
    link.symlink_to(first.path)
    scanner = open_scanner(f"serial:{link}")
    try:
        threading.Timer(0.1, first.unplug).start()
        with pytest.raises(ReaderGoneError, match="unplugged"):
            scanner.wait_for_code(timeout=10)
        link.unlink()
        with pytest.raises(ReaderGoneError):  # still not back
            scanner.wait_for_code(timeout=0.1)
        second = PtyScanner()
        link.symlink_to(second.path)
        # pyserial flushes the input when it opens the port, so type once the driver is back.
        threading.Timer(0.3, second.type_code, args=("after replug",)).start()
        assert scanner.wait_for_code(timeout=10) == "after replug"
        second.unplug()
    finally:
        scanner.close()
        scanner.close()


def test_missing_device_and_unknown_scheme_are_actionable(tmp_path: Path) -> None:
    with pytest.raises(DeviceUnavailableError) as caught:
        open_scanner(f"serial:{tmp_path / 'ttyACM9'}")
    assert "cannot open" in str(caught.value)
    assert "plugged in" in caught.value.fix
    with pytest.raises(UnknownSchemeError, match="serial:"):
        open_scanner("hid:0c2e:0b61")
    with pytest.raises(DeviceUnavailableError, match="suffix must be one of"):
        open_scanner(f"serial:{os.devnull}?suffix=TAB")
