"""Small, real media files made in code (no binary assets in the repository).

- `ogg_opus(seconds)`: an Ogg Opus stream (OpusHead, OpusTags, 20 ms silent CELT frames), the
  format of a Telegram voice note; a few hundred bytes.
- `wav(seconds, hertz)`: a 16 kHz mono 16-bit PCM WAV of a sine tone (what whisper.cpp's server
  reads without ffmpeg).
- `jpeg(width, height, shade)`: a baseline greyscale JFIF of one flat shade (each 8×8 block
  coded by its DC value), decodable by any JPEG reader; distinct shades give distinct bytes.
- `pdf(lines)`: a one-page PDF whose text is `lines` (Helvetica), which pypdf extracts.
"""

from __future__ import annotations

import math
import struct

# -- Ogg Opus ------------------------------------------------------------------------------------


def _ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def _ogg_page(packets: list[bytes], granule: int, sequence: int, flags: int) -> bytes:
    segments = bytearray()
    for packet in packets:
        segments.extend([255] * (len(packet) // 255) + [len(packet) % 255])
    header = struct.pack(
        "<4sBBqIIIB", b"OggS", 0, flags, granule, 0x5EED, sequence, 0, len(segments)
    )
    page = header + bytes(segments) + b"".join(packets)
    crc = _ogg_crc(page)
    return page[:22] + struct.pack("<I", crc) + page[26:]


def ogg_opus(seconds: float = 1.0) -> bytes:
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 312, 48000, 0, 0)
    tags = b"OpusTags" + struct.pack("<I", 4) + b"test" + struct.pack("<I", 0)
    frames = max(1, round(seconds / 0.02))
    silence = b"\xf8\xff\xfe"  # TOC: CELT fullband 20 ms, mono; a silent frame
    pages = [_ogg_page([head], 0, 0, 0x02), _ogg_page([tags], 0, 1, 0x00)]
    sequence, done = 2, 0
    while done < frames:
        batch = min(50, frames - done)
        done += batch
        last = done == frames
        pages.append(_ogg_page([silence] * batch, 312 + done * 960, sequence, 0x04 * last))
        sequence += 1
    return b"".join(pages)


def wav(seconds: float = 2.0, hertz: float = 440.0, rate: int = 16000) -> bytes:
    count = round(seconds * rate)
    samples = (round(8000 * math.sin(2 * math.pi * hertz * i / rate)) for i in range(count))
    pcm = struct.pack(f"<{count}h", *samples)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)  # PCM, mono, 16-bit
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm))
    return b"RIFF" + struct.pack("<I", 4 + len(chunks) + len(pcm)) + b"WAVE" + chunks + pcm


# -- JPEG ----------------------------------------------------------------------------------------


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


class _Bits:
    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.count = 0

    def put(self, value: int, length: int) -> None:
        for shift in range(length - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> shift) & 1)
            self.count += 1
            if self.count == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)  # byte stuffing
                self.acc = self.count = 0

    def flush(self) -> bytes:
        if self.count:
            self.put((1 << (8 - self.count)) - 1, 8 - self.count)
        return bytes(self.out)


def jpeg(width: int = 16, height: int = 16, shade: int = 200) -> bytes:
    """A flat greyscale JPEG; `width` and `height` are rounded up to whole 8×8 blocks."""
    if shade == 128:
        shade = 129  # a DC value of 0 would need a second code for the same category
    width, height = -(-width // 8) * 8, -(-height // 8) * 8
    value = 8 * (shade - 128)
    category = abs(value).bit_length()
    bits = value if value > 0 else value + (1 << category) - 1
    # DC table: '0' = this category, '10' = category 0 (same value as the block before).
    dc_table = bytes([0x00, 1, 1] + [0] * 14 + [category, 0])
    ac_table = bytes([0x10, 1] + [0] * 15 + [0x00])  # '0' = end of block
    stream = _Bits()
    blocks = (width // 8) * (height // 8)
    for index in range(blocks):
        if index == 0:
            stream.put(0b0, 1)
            stream.put(bits, category)
        else:
            stream.put(0b10, 2)
        stream.put(0b0, 1)
    return b"".join(
        [
            b"\xff\xd8",
            _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
            _segment(0xDB, b"\x00" + b"\x01" * 64),
            _segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"),
            _segment(0xC4, dc_table),
            _segment(0xC4, ac_table),
            _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"),
            stream.flush(),
            b"\xff\xd9",
        ]
    )


# -- PDF -----------------------------------------------------------------------------------------


def pdf(lines: list[str]) -> bytes:
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    shown = " ".join(f"({escape(line)}) Tj 0 -16 Td" for line in lines)
    content = f"BT /F1 12 Tf 72 720 Td {shown} ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
