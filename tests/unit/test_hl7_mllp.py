"""MLLP framing: the incremental decoder, byte stream in, frames out."""

from __future__ import annotations

from archive.hl7.mllp import Frame, FrameDecoder, OversizedFrame, encode_frame

A = b"MSH|^~\\&|A\rPID|||1\r"
B = b"MSH|^~\\&|B\rPID|||2\r"


def feed_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[object]:
    events: list[object] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events


def test_one_frame_is_unwrapped() -> None:
    assert FrameDecoder(1024).feed(encode_frame(A)) == [Frame(A)]


def test_several_frames_in_one_read_come_out_in_order() -> None:
    assert FrameDecoder(1024).feed(encode_frame(A) + encode_frame(B)) == [Frame(A), Frame(B)]


def test_a_frame_split_into_single_bytes_is_reassembled() -> None:
    stream = encode_frame(A) + encode_frame(B)
    decoder = FrameDecoder(1024)
    assert feed_all(decoder, [stream[i : i + 1] for i in range(len(stream))]) == [Frame(A), Frame(B)]
    assert decoder.pending == 0


def test_bytes_between_frames_are_dropped_and_counted() -> None:
    decoder = FrameDecoder(1024)
    events = decoder.feed(b"noise" + encode_frame(A) + b"\r\n\r\n" + b"more" + encode_frame(B))
    assert events == [Frame(A), Frame(B)]
    assert decoder.garbage_bytes == len(b"noise") + len(b"more")


def test_a_frame_cut_short_by_a_new_start_block_is_abandoned() -> None:
    decoder = FrameDecoder(1024)
    assert decoder.feed(b"\x0bMSH|half" + encode_frame(B)) == [Frame(B)]
    assert decoder.garbage_bytes > 0


def test_a_missing_final_carriage_return_is_tolerated() -> None:
    assert FrameDecoder(1024).feed(b"\x0b" + A + b"\x1c" + encode_frame(B)) == [Frame(A), Frame(B)]


def test_an_oversized_frame_is_reported_once_with_its_head_and_skipped() -> None:
    decoder = FrameDecoder(64)
    big = A + b"NTE|" + b"x" * 500 + b"\r"
    stream = encode_frame(big) + encode_frame(B)
    events = feed_all(decoder, [stream[i : i + 50] for i in range(0, len(stream), 50)])
    assert len(events) == 2
    assert isinstance(events[0], OversizedFrame) and events[0].head.startswith(b"MSH|^~\\&|A\r")
    assert events[1] == Frame(B)
    assert decoder.pending == 0


def test_an_unfinished_frame_is_held_until_its_end_arrives() -> None:
    decoder = FrameDecoder(1024)
    assert decoder.feed(b"\x0b" + A) == []
    assert decoder.pending == len(A)
    assert decoder.feed(b"\x1c\r") == [Frame(A)]
