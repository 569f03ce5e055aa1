"""MLLP framing (``<VT> message <FS><CR>``), as an incremental decoder independent of any socket.

The decoder is deliberately more forgiving than the ``hl7`` package's stream reader: bytes between
frames (keep-alive newlines, a sender's stray bytes) are dropped, a frame cut short by a new start
block is abandoned, a missing final CR is tolerated, and a frame larger than the limit is reported
once and skipped without holding it in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK

VT = START_BLOCK[0]
FS = END_BLOCK[0]
CR = CARRIAGE_RETURN[0]
# Of an oversized frame only its beginning (the MSH segment, for the ACK) is kept.
HEADER_KEEP = 4096


@dataclass(frozen=True)
class Frame:
    """One complete message payload, without the MLLP envelope."""

    payload: bytes


@dataclass(frozen=True)
class OversizedFrame:
    """A frame that outgrew the limit; ``head`` is its first bytes (enough to read MSH)."""

    head: bytes


Event = Frame | OversizedFrame


def encode_frame(payload: bytes) -> bytes:
    return START_BLOCK + payload + END_BLOCK + CARRIAGE_RETURN


class FrameDecoder:
    """Feed it bytes as they arrive; it returns the frames completed by them, in order."""

    def __init__(self, max_message_bytes: int) -> None:
        self._max = max_message_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._oversized = False
        self.garbage_bytes = 0

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held right now."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        position = 0
        while position < len(data):
            if not self._in_frame:
                start = data.find(START_BLOCK, position)
                if start < 0:
                    self.garbage_bytes += _non_whitespace(data[position:])
                    return events
                self.garbage_bytes += _non_whitespace(data[position:start])
                self._in_frame = True
                self._oversized = False
                self._buffer.clear()
                position = start + 1
                continue
            end = data.find(END_BLOCK, position)
            restart = data.find(START_BLOCK, position)
            if restart >= 0 and (end < 0 or restart < end):
                # A new frame began before this one ended: the sender gave up on it; so do we.
                self.garbage_bytes += restart - position + len(self._buffer)
                self._in_frame = False
                position = restart
                continue
            chunk = data[position : end if end >= 0 else len(data)]
            if self._oversized:
                pass  # skip the rest of an oversized frame
            elif len(self._buffer) + len(chunk) > self._max:
                self._oversized = True
                head = bytes((self._buffer + chunk)[:HEADER_KEEP])
                self._buffer.clear()
                events.append(OversizedFrame(head))
            else:
                self._buffer += chunk
            if end < 0:
                return events
            if not self._oversized:
                events.append(Frame(bytes(self._buffer)))
            self._buffer.clear()
            self._in_frame = False
            position = end + 1
            if position < len(data) and data[position] == CR:
                position += 1
        return events


def _non_whitespace(data: bytes) -> int:
    return len(data.strip())
