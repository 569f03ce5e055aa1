"""Decoding an HL7 v2 ADT message: bytes -> text (by MSH-18) -> typed fields the archive uses.

Parsing into segments and fields is the ``hl7`` package's; this module reads the few fields the
patient interface needs, unescapes them, and raises the archive's HL7 errors (with the ERR-2
location of the offending field) for anything it cannot accept.
"""

from __future__ import annotations

from dataclasses import dataclass

import hl7

from archive.errors import MalformedMessage, RequiredFieldMissing, UnsupportedCharacterSet

# MSH-18 (HL7 table 0211) -> (Python codec, DICOM Specific Character Set (0008,0005)).
# An empty MSH-18 means 7-bit ASCII, which needs no Specific Character Set in DICOM.
CHARACTER_SETS: dict[str, tuple[str, str | None]] = {
    "": ("ascii", None),
    "ASCII": ("ascii", None),
    "8859/1": ("latin-1", "ISO_IR 100"),
    "UNICODE UTF-8": ("utf-8", "ISO_IR 192"),
}
NULL = '""'  # HL7's explicit null: "delete the value the receiver has"


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
    """The message text, decoded per MSH-18, and the DICOM character set it corresponds to."""
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
    # Segments end with CR; tolerate senders that use LF or CRLF.
    return text.replace("\r\n", "\r").replace("\n", "\r"), dicom


def parse_header(text: str) -> MessageHeader:
    """MSH of a decoded message; raises MalformedMessage if there is none."""
    if not text.startswith("MSH") or len(text) < 8:
        raise MalformedMessage("the message does not begin with an MSH segment", location="MSH")
    separator, encoding = text[3], text[4:8]
    if len(set(separator + encoding)) != 5 or not encoding.isprintable() or separator.isalnum():
        raise MalformedMessage("MSH-1/MSH-2 encoding characters are invalid", location="MSH^1^2")
    component, repetition = encoding[0], encoding[1]
    fields = text.split("\r", 1)[0].split(separator)
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


class _Reader:
    """Field access on a parsed message, with HL7 unescaping and ERR-2 locations."""

    def __init__(self, message: hl7.Message, encoding: str) -> None:
        self._message = message
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

    def text(self, value: str) -> str:
        return str(self._message.unescape(value)) if self._escape in value else value

    def identifiers(self, segment: hl7.Segment, name: str, field: int) -> tuple[PatientIdentifier, ...]:
        out = []
        for number, components in enumerate(self.repetitions(segment, field), start=1):
            components = [*components, "", "", "", ""]
            identifier = self.text(components[0]).strip()
            if not identifier:
                continue
            authority = [*components[3].split(self._subcomponent), "", "", ""]
            out.append(
                PatientIdentifier(
                    identifier,
                    HierarchicDesignator(*(self.text(a).strip() for a in authority[:3])),
                    f"{name}^1^{field}^{number}",
                )
            )
        return tuple(out)

    def person_name(self, segment: hl7.Segment, field: int) -> str | None:
        """PID-5 (first repetition, XPN) as a DICOM PN value."""
        raw = self.raw(segment, field)
        if not raw:
            return None
        if raw == NULL:
            return ""
        first = raw.split(self._repetition, 1)[0]
        # XPN: family (FN: surname&...)^given^middle^suffix^prefix^degree
        parts = [self.text(p.split(self._subcomponent, 1)[0]).strip() for p in first.split(self._component)]
        parts += [""] * 6
        family, given, middle, suffix, prefix = parts[:5]
        return "^".join((family, given, middle, prefix, suffix)).rstrip("^")

    def scalar(self, segment: hl7.Segment, field: int) -> str | None:
        raw = self.raw(segment, field)
        if not raw:
            return None
        if raw == NULL:
            return ""
        return self.text(raw.split(self._repetition, 1)[0].split(self._component, 1)[0]).strip()


def parse_adt(raw: bytes) -> AdtMessage:
    """Decode and read an ADT message. Field presence per event is checked by the caller."""
    text, dicom_charset = decode(raw)
    header = parse_header(text)
    try:
        message = hl7.parse(text)
    except (ValueError, IndexError, KeyError) as exc:
        raise MalformedMessage(f"cannot parse the message: {exc}") from exc
    reader = _Reader(message, header.encoding_characters)
    pid = reader.segment("PID")
    mrg = reader.segment("MRG")
    demographics = Demographics()
    patient_ids: tuple[PatientIdentifier, ...] = ()
    if pid is not None:
        patient_ids = reader.identifiers(pid, "PID", 3)
        birth = reader.scalar(pid, 7)
        demographics = Demographics(
            patient_name=reader.person_name(pid, 5),
            birth_date=birth[:8] if birth else birth,
            sex=reader.scalar(pid, 8),
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
