"""Decoding an HL7 v2 ADT message: bytes -> text (by MSH-18) -> typed fields the archive uses.

Parsing into segments and fields is the ``hl7`` package's; this module reads the few fields the
patient interface needs, unescapes them, and raises the archive's HL7 errors (with the ERR-2
location of the offending field) for anything it cannot accept.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

import hl7

from archive.errors import InvalidFieldValue, MalformedMessage, RequiredFieldMissing, UnsupportedCharacterSet

# MSH-18 (HL7 table 0211) -> (Python codec, DICOM Specific Character Set (0008,0005)).
# An empty MSH-18 means 7-bit ASCII, which needs no Specific Character Set in DICOM.
CHARACTER_SETS: dict[str, tuple[str, str | None]] = {
    "": ("ascii", None),
    "ASCII": ("ascii", None),
    "8859/1": ("latin-1", "ISO_IR 100"),
    "UNICODE UTF-8": ("utf-8", "ISO_IR 192"),
}
NULL = '""'  # HL7's explicit null: "delete the value the receiver has"

# Limits of what the archive keeps, from where each value ends up: Patient ID is DICOM LO (64
# characters), a PN component group 64 characters, MSH-10 HL7 ST (199). Checked before AA.
MAX_PATIENT_ID = 64
MAX_NAME_GROUP = 64
MAX_CONTROL_ID = 199
MAX_OID = 64  # DICOM UI
SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
HEX = re.compile(r"[0-9A-Fa-f]+")
OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
# HL7 table 0001 (administrative sex) -> DICOM (0010,0040): M, F, O; U (unknown) clears the value.
SEX_TO_DICOM = {"M": "M", "F": "F", "O": "O", "A": "O", "N": "O", "U": ""}
# Characters no kept value may hold: DICOM's value delimiter and PN/key separators.
FORBIDDEN_IN_IDENTIFIER = set("\\^=")
FORBIDDEN_IN_NAME = set("\\^=")


@dataclass(frozen=True)
class HierarchicDesignator:
    """HD: namespace^universal ID^universal ID type (MSH-3/4, PID-3.4)."""

    namespace: str = ""
    universal_id: str = ""
    universal_id_type: str = ""

    @property
    def oid(self) -> str | None:
        return self.universal_id if self.universal_id and self.universal_id_type.upper() == "ISO" else None

    def encode(self, component: str = "^") -> str:
        return component.join((self.namespace, self.universal_id, self.universal_id_type)).rstrip(component)

    def __str__(self) -> str:
        return self.encode()


@dataclass(frozen=True)
class PatientIdentifier:
    """CX as sent: the ID and its assigning authority (PID-3.4 / MRG-1.4)."""

    id: str
    authority: HierarchicDesignator
    location: str  # ERR-2 location of the repetition, e.g. "PID^1^3^1"


@dataclass(frozen=True)
class Demographics:
    """What A08/A31/A40 say about the patient. None = not sent; "" = HL7 null (delete)."""

    patient_name: str | None = None  # as a DICOM PN: family^given^middle^prefix^suffix
    birth_date: str | None = None  # YYYYMMDD
    sex: str | None = None
    death_date: str | None = None  # YYYYMMDD from PID-29; "" retracts (PID-29 null or PID-30 "N")


@dataclass(frozen=True)
class MessageHeader:
    field_separator: str
    encoding_characters: str
    sending_application: HierarchicDesignator
    sending_facility: HierarchicDesignator
    receiving_application: str  # as sent, echoed in the ACK
    receiving_facility: str
    message_type: str
    trigger_event: str
    message_structure: str
    control_id: str
    processing_id: str
    version: str
    character_set: str  # MSH-18 as sent (first repetition)

    @property
    def sender(self) -> str:
        return f"{self.sending_application}|{self.sending_facility}"


@dataclass(frozen=True)
class AdtMessage:
    header: MessageHeader
    text: str  # the decoded message, segments separated by CR
    patient_ids: tuple[PatientIdentifier, ...]  # PID-3
    demographics: Demographics
    prior_ids: tuple[PatientIdentifier, ...]  # MRG-1 (A40, A47)
    dicom_character_set: str | None


def character_set(raw: bytes) -> str:
    """MSH-18 (first repetition) read from the raw bytes, before the message can be decoded."""
    segment = raw.lstrip().split(b"\r", 1)[0].split(b"\n", 1)[0]
    if len(segment) < 8 or not segment.startswith(b"MSH"):
        raise MalformedMessage("the message does not begin with an MSH segment", location="MSH")
    separator, repetition = segment[3:4], segment[5:6]
    fields = segment.split(separator)
    value = fields[17] if len(fields) > 17 else b""
    return value.split(repetition, 1)[0].strip().decode("ascii", "replace").upper()


def decode(raw: bytes) -> tuple[str, str | None]:
    """The message text, decoded per MSH-18, and the DICOM character set it corresponds to.

    Segments are separated by CR; LF and CRLF are tolerated, and blank segments (CR CR, or a line
    of spaces), which senders commonly emit, are dropped.
    """
    name = character_set(raw)
    if name not in CHARACTER_SETS:
        raise UnsupportedCharacterSet(f"MSH-18 {name!r} is not supported", location="MSH^1^18")
    codec, dicom = CHARACTER_SETS[name]
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise UnsupportedCharacterSet(
            f"the message is not valid {name or 'ASCII (no MSH-18)'}: {exc.reason} at byte {exc.start}",
            location="MSH^1^18",
        ) from exc
    segments = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    return "\r".join(s for s in segments if s.strip()), dicom


def codec_of(character_set_name: str) -> str:
    return CHARACTER_SETS.get(character_set_name, ("ascii", None))[0]


def _delimiters_valid(separator: str, encoding: str) -> bool:
    """MSH-1 and MSH-2: five distinct printable ASCII punctuation characters."""
    characters = separator + encoding
    return len(set(characters)) == 5 and all(
        c.isascii() and c.isprintable() and not c.isalnum() and not c.isspace() for c in characters
    )


def parse_header(text: str) -> MessageHeader:
    """MSH of a decoded message; raises MalformedMessage if there is none or its delimiters are broken."""
    if not text.startswith("MSH") or len(text) < 8:
        raise MalformedMessage("the message does not begin with an MSH segment", location="MSH")
    separator, encoding = text[3], text[4:8]
    first = text.split("\r", 1)[0]
    fields = first.split(separator)
    # MSH-2 is four characters, or five with the truncation character of v2.7+ ("^~\&#").
    if not _delimiters_valid(separator, encoding) or not 4 <= len(fields[1]) <= 5:
        raise MalformedMessage("MSH-1/MSH-2 encoding characters are invalid", location="MSH^1^2")
    component, repetition = encoding[0], encoding[1]
    # fields[0] = "MSH", fields[1] = MSH-2, so MSH-n = fields[n - 1].

    def f(n: int) -> str:
        value = fields[n - 1] if len(fields) >= n else ""
        return value.split(repetition, 1)[0].strip()

    def hd(value: str) -> HierarchicDesignator:
        parts = [*value.split(component), "", "", ""]
        return HierarchicDesignator(parts[0].strip(), parts[1].strip(), parts[2].strip())

    message_type = [*f(9).split(component), "", "", ""]
    return MessageHeader(
        field_separator=separator,
        encoding_characters=encoding,
        sending_application=hd(f(3)),
        sending_facility=hd(f(4)),
        receiving_application=f(5),
        receiving_facility=f(6),
        message_type=message_type[0].strip().upper(),
        trigger_event=message_type[1].strip().upper(),
        message_structure=message_type[2].strip().upper(),
        control_id=f(10),
        processing_id=f(11),
        version=f(12),
        character_set=f(18).upper(),
    )


def _has_control(value: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cs") for c in value)


def unescape(value: str, separator: str, encoding: str, codec: str, location: str) -> str:
    r"""Resolve HL7 escape sequences in one value, by a strict rule (docs/conformance-hl7.md):

    ``\F\ \S\ \T\ \R\ \E\`` are the delimiters; ``\H\ \N\`` (highlighting) carry no text and are
    dropped; ``\Xhh...\`` is an even number of hex digits, decoded as bytes in the message's own
    character set, and must decode to printable text. Anything else (``\C..\``, ``\M..\``, ``\Z..\``,
    formatting commands, an unterminated sequence) is refused, never passed on half-decoded.
    """
    component, repetition, escape, subcomponent = encoding[0], encoding[1], encoding[2], encoding[3]
    if escape not in value:
        return value
    simple = {
        "F": separator,
        "S": component,
        "T": subcomponent,
        "R": repetition,
        "E": escape,
        "H": "",
        "N": "",
    }
    out: list[str] = []
    position = 0
    while True:
        start = value.find(escape, position)
        if start < 0:
            out.append(value[position:])
            return "".join(out)
        out.append(value[position:start])
        end = value.find(escape, start + 1)
        if end < 0:
            raise InvalidFieldValue(f"unterminated escape sequence in {value[:40]!r}", location=location)
        sequence = value[start + 1 : end]
        if sequence in simple:
            out.append(simple[sequence])
        elif sequence[:1] == "X" and len(sequence) % 2 == 1 and HEX.fullmatch(sequence[1:]):
            try:
                text = bytes.fromhex(sequence[1:]).decode(codec)
            except ValueError as exc:  # bytes not valid in the character set
                raise InvalidFieldValue(
                    f"escape \\{sequence}\\ is not hex text in {codec}", location=location
                ) from exc
            if _has_control(text):
                raise InvalidFieldValue(
                    f"escape \\{sequence}\\ encodes a control character", location=location
                )
            out.append(text)
        else:
            raise InvalidFieldValue(
                f"escape sequence \\{sequence[:20]}\\ is not supported", location=location
            )
        position = end + 1


def _check_text(value: str, what: str, location: str, forbidden: set[str], limit: int) -> str:
    if len(value) > limit:
        raise InvalidFieldValue(
            f"{what} is {len(value)} characters; at most {limit} are kept", location=location
        )
    if _has_control(value) or forbidden & set(value):
        raise InvalidFieldValue(
            f"{what} {value[:40]!r} has characters it cannot keep (control characters or {''.join(sorted(forbidden))})",
            location=location,
        )
    return value


class _Reader:
    """Field access on a parsed message, with HL7 unescaping and ERR-2 locations."""

    def __init__(self, message: hl7.Message, separator: str, encoding: str, codec: str) -> None:
        self._message = message
        self._separator, self._encoding, self._codec = separator, encoding, codec
        self._component, self._repetition = encoding[0], encoding[1]
        self._escape, self._subcomponent = encoding[2], encoding[3]

    def segment(self, name: str) -> hl7.Segment | None:
        try:
            return self._message.segment(name)
        except KeyError:
            return None

    def raw(self, segment: hl7.Segment, field: int) -> str:
        return str(segment(field)) if len(segment) > field else ""

    def repetitions(self, segment: hl7.Segment, field: int) -> list[list[str]]:
        """Each repetition as its components (subcomponents kept joined, unescaped later)."""
        raw = self.raw(segment, field)
        if not raw:
            return []
        return [rep.split(self._component) for rep in raw.split(self._repetition)]

    def text(self, value: str, location: str) -> str:
        """The value unescaped; control characters (C0, DEL, C1), literal or escaped, are refused
        before any trimming could hide them."""
        text = unescape(value, self._separator, self._encoding, self._codec, location)
        if _has_control(text):
            raise InvalidFieldValue(f"{text[:40]!r} has control characters", location=location)
        return text

    def identifiers(self, segment: hl7.Segment, name: str, field: int) -> tuple[PatientIdentifier, ...]:
        out = []
        for number, components in enumerate(self.repetitions(segment, field), start=1):
            location = f"{name}^1^{field}^{number}"
            components = [*components, "", "", "", ""]
            identifier = self.text(components[0], f"{location}^1").strip()
            if not identifier:
                continue
            _check_text(
                identifier, "the patient identifier", f"{location}^1", FORBIDDEN_IN_IDENTIFIER, MAX_PATIENT_ID
            )
            authority = [*components[3].split(self._subcomponent), "", "", ""]
            hd = [self.text(a, f"{location}^4").strip() for a in authority[:3]]
            for part in hd:
                _check_text(part, "the assigning authority", f"{location}^4", set(), MAX_PATIENT_ID)
            out.append(PatientIdentifier(identifier, HierarchicDesignator(*hd), location))
        return tuple(out)

    def person_name(self, segment: hl7.Segment, field: int) -> str | None:
        """PID-5 (first repetition, XPN) as a DICOM PN value."""
        raw = self.raw(segment, field)
        if not raw:
            return None
        if raw == NULL:
            return ""
        location = f"PID^1^{field}^1"
        first = raw.split(self._repetition, 1)[0]
        # XPN: family (FN: surname&...)^given^middle^suffix^prefix^degree
        parts = [
            self.text(p.split(self._subcomponent, 1)[0], location).strip()
            for p in first.split(self._component)
        ]
        parts += [""] * 6
        family, given, middle, suffix, prefix = parts[:5]
        name = "^".join((family, given, middle, prefix, suffix)).rstrip("^")
        for part in (family, given, middle, suffix, prefix):
            _check_text(part, "a name component", location, FORBIDDEN_IN_NAME, MAX_NAME_GROUP)
        if len(name) > MAX_NAME_GROUP:
            raise InvalidFieldValue(
                f"the name is {len(name)} characters as DICOM PN; at most {MAX_NAME_GROUP} are kept",
                location=location,
            )
        return name

    def scalar(self, segment: hl7.Segment, field: int, location: str) -> str | None:
        raw = self.raw(segment, field)
        if not raw:
            return None
        if raw == NULL:
            return ""
        value = self.text(raw.split(self._repetition, 1)[0].split(self._component, 1)[0], location).strip()
        return value or None


def _calendar_day(value: str, what: str, location: str) -> str:
    """The day of an HL7 DTM as DICOM DA (YYYYMMDD): a full calendar date is required, the time
    part is dropped; else InvalidFieldValue naming ``what`` at ``location``."""
    day = value[:8]
    try:
        if not (len(day) == 8 and day.isdigit()):
            raise ValueError(day)
        date(int(day[:4]), int(day[4:6]), int(day[6:8]))
    except ValueError as exc:
        raise InvalidFieldValue(f"{what} {value[:20]!r} is not a date YYYYMMDD", location=location) from exc
    return day


def _birth_date(value: str | None) -> str | None:
    """PID-7 (DTM) -> DICOM DA: a full calendar date is required; the time part is dropped."""
    if not value:
        return value
    return _calendar_day(value, "birth date", "PID^1^7")


def _death_date(value: str | None, indicator: str | None) -> str | None:
    """PID-29 (DTM) and PID-30 (Y/N) -> the death date (DICOM DA), "" to retract a recorded death,
    None to leave it as it is. A death without a day (PID-30 "Y" alone, or PID-29 of a year or a
    month only) cannot start a retention: the first is left as is, the second refused."""
    flag = (indicator or "").upper()
    if flag not in ("", "Y", "N"):
        raise InvalidFieldValue(
            f"patient death indicator {(indicator or '')[:10]!r} is not Y or N (HL7 table 0136)",
            location="PID^1^30",
        )
    if value:
        day = _calendar_day(value, "patient death date", "PID^1^29")
        if flag == "N":
            raise InvalidFieldValue(
                "patient death indicator N with a death date in PID-29", location="PID^1^30"
            )
        return day
    if value == "" or flag == "N":
        return ""
    return None


def _sex(value: str | None) -> str | None:
    if not value:
        return value
    if value.upper() not in SEX_TO_DICOM:
        raise InvalidFieldValue(
            f"administrative sex {value[:10]!r} is not in HL7 table 0001", location="PID^1^8"
        )
    return SEX_TO_DICOM[value.upper()]


def _segments_valid(text: str, separator: str) -> None:
    for number, segment in enumerate(text.split("\r"), start=1):
        name = segment[:3]
        if not SEGMENT_ID.fullmatch(name) or (len(segment) > 3 and segment[3] != separator):
            raise MalformedMessage(
                f"segment {number} ({segment[:10]!r}) is not an HL7 segment", location=None
            )


def parse_adt(raw: bytes) -> AdtMessage:
    """Decode and read an ADT message. Field presence per event is checked by the caller."""
    text, dicom_charset = decode(raw)
    header = parse_header(text)
    if len(header.control_id) > MAX_CONTROL_ID or _has_control(header.control_id):
        raise InvalidFieldValue(
            "MSH-10 is longer than 199 characters or has control characters", location="MSH^1^10"
        )
    _segments_valid(text, header.field_separator)
    try:
        message = hl7.parse(text)
    except Exception as exc:  # the parser's failures on odd input are many; all mean "not parseable"
        raise MalformedMessage(f"cannot parse the message: {type(exc).__name__}") from exc
    reader = _Reader(
        message, header.field_separator, header.encoding_characters, codec_of(header.character_set)
    )
    pid = reader.segment("PID")
    mrg = reader.segment("MRG")
    demographics = Demographics()
    patient_ids: tuple[PatientIdentifier, ...] = ()
    if pid is not None:
        patient_ids = reader.identifiers(pid, "PID", 3)
        demographics = Demographics(
            patient_name=reader.person_name(pid, 5),
            birth_date=_birth_date(reader.scalar(pid, 7, "PID^1^7")),
            sex=_sex(reader.scalar(pid, 8, "PID^1^8")),
            death_date=_death_date(reader.scalar(pid, 29, "PID^1^29"), reader.scalar(pid, 30, "PID^1^30")),
        )
    prior_ids = reader.identifiers(mrg, "MRG", 1) if mrg is not None else ()
    return AdtMessage(
        header=header,
        text=text,
        patient_ids=patient_ids,
        demographics=demographics,
        prior_ids=prior_ids,
        dicom_character_set=dicom_charset,
    )


def require(value: str | None, what: str, location: str) -> str:
    if not value:
        raise RequiredFieldMissing(f"{what} is required", location=location)
    return value
