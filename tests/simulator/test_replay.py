"""Transcript replay: the `replay:PATH` reader answers from a recording."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivers.base import RecordedInputs
from drivers.errors import DeviceUnavailableError, UnknownSchemeError
from drivers.url import open_reader, reader_schemes
from emv import apdu
from simulator.replay import ReplayCard, Transcript, TranscriptError

SELECT_VISA = apdu.select(bytes.fromhex("A0000000031010")).encode()
SELECT_MC = apdu.select(bytes.fromhex("A0000000041010")).encode()


def _transcript(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "transcript.json"
    path.write_text(json.dumps(document))
    return path


def test_answers_as_the_card_did_and_only_then(tmp_path: Path) -> None:
    path = _transcript(
        tmp_path,
        {
            "terminal": {"unpredictable_number": "CAFEBABE", "date": "261125", "time": "101500"},
            "exchanges": [
                {"command": SELECT_MC.hex(), "response": "6F009000"},
                {"command": SELECT_VISA.hex(), "response": "6F019000"},
                {"command": "00B2010C00", "response": "70009000"},
                {"command": "00B2011400", "response": "70019000"},
            ],
        },
    )
    with open_reader(f"replay:{path}") as reader:
        assert reader.recorded_inputs() == RecordedInputs(
            bytes.fromhex("CAFEBABE"), "261125", "101500"
        )
        assert reader.transceive(SELECT_VISA) == bytes.fromhex("6F019000")
        assert reader.transceive(SELECT_MC) == bytes.fromhex("6F009000")
        # READ RECORD by its exact P1 P2: the record asked for, in any order.
        assert reader.transceive(apdu.read_record(2, 1).encode()) == bytes.fromhex("70019000")
        assert reader.transceive(apdu.read_record(1, 1).encode()) == bytes.fromhex("70009000")
        # Read again, the card answers the same; a record it never gave: 6A83, not the next.
        assert reader.transceive(apdu.read_record(1, 1).encode()) == bytes.fromhex("70009000")
        assert reader.transceive(apdu.read_record(3, 1).encode()) == bytes.fromhex("6A83")
        # An application the recording never selected: 6A82.
        other = apdu.select(bytes.fromhex("A0000000651010")).encode()
        assert reader.transceive(other) == bytes.fromhex("6A82")


def test_unmatched_commands_get_the_card_s_refusal_and_are_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    card = ReplayCard(
        Transcript.from_json(
            {
                "exchanges": [
                    {"command": "00A4040000", "response": "9000"},
                    {"command": "80CA9F1700", "response": "9F1701039000"},
                ]
            }
        )
    )
    # GET DATA by the tag it asks for (P1 P2): the ATC was never recorded, the PIN try
    # counter was.
    assert card.transceive(bytes.fromhex("80CA9F3600")) == bytes.fromhex("6A88")
    assert card.transceive(bytes.fromhex("80CA9F1700")) == bytes.fromhex("9F1701039000")
    # An instruction the recording never saw: 6D00.
    assert card.transceive(bytes.fromhex("0084000008")) == bytes.fromhex("6D00")
    assert card.unmatched == [bytes.fromhex("80CA9F3600"), bytes.fromhex("0084000008")]
    assert "not in the transcript" in caplog.text
    assert card.recorded_inputs() is None
    assert [e.command.hex().upper() for e in card.unused] == ["00A4040000"]


def test_gpo_and_generate_ac_answer_in_order_and_report_different_data() -> None:
    recorded_gpo = apdu.get_processing_options(bytes.fromhex("36A04000CAFEBABE")).encode()
    card = ReplayCard(
        Transcript.from_json(
            {
                "exchanges": [
                    {"command": recorded_gpo.hex(), "response": "770A820200009404080101009000"}
                ]
            }
        )
    )
    sent = apdu.get_processing_options(bytes.fromhex("36A0400012345678")).encode()
    assert card.transceive(sent) == bytes.fromhex("770A820200009404080101009000")
    assert card.differing == [(sent, recorded_gpo)]
    assert card.unmatched == []


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "expected a JSON object"),
        ({"exchanges": []}, "'exchanges' must be a non-empty list"),
        (
            {"exchanges": [{"command": "00A4", "response": "9000"}]},
            "exchanges[0].command must be at least 4 bytes",
        ),
        (
            {"exchanges": [{"command": "00A40400", "response": "zz"}]},
            "exchanges[0].response is not hex",
        ),
        (
            {
                "terminal": {"unpredictable_number": "CAFE", "date": "261125", "time": "101500"},
                "exchanges": [{"command": "00A40400", "response": "9000"}],
            },
            "terminal.unpredictable_number must be at least 4 bytes",
        ),
        (
            {
                "terminal": {"unpredictable_number": "CAFEBABE", "date": "2611", "time": "101500"},
                "exchanges": [{"command": "00A40400", "response": "9000"}],
            },
            "terminal.date must be six digits",
        ),
    ],
)
def test_bad_transcripts_name_the_field(tmp_path: Path, document: object, message: str) -> None:
    path = _transcript(tmp_path, document)
    with pytest.raises(TranscriptError, match=r".*") as caught:
        Transcript.load(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_missing_transcript_file(tmp_path: Path) -> None:
    with pytest.raises(TranscriptError, match="cannot read transcript"):
        open_reader(f"replay:{tmp_path / 'absent.json'}")


def test_unknown_scheme_says_what_exists() -> None:
    with pytest.raises(UnknownSchemeError) as caught:
        open_reader("floppy:0")
    assert "no reader driver for scheme 'floppy'" in str(caught.value)
    assert "replay:" in str(caught.value)
    assert "sim:" in str(caught.value)
    assert {"sim", "replay"} <= set(reader_schemes())
    with pytest.raises(DeviceUnavailableError, match="SCHEME:DEVICE"):
        open_reader("visa")
