"""AI-content labels: the implicit label in an image file's metadata, and the explicit one drawn
on a downloaded image.

The implicit label follows the metadata structure of GB 45438-2025 (网络安全技术 人工智能生成合成
内容标识方法, with the Measures for labelling AI-generated synthetic content, in force since
2025-09-01): one ``AIGC`` field holding a JSON object with exactly the standard's seven keys

    {"Label": "1", "ContentProducer": …, "ProduceID": …, "ReservedCode1": …,
     "ContentPropagator": …, "PropagateID": …, "ReservedCode2": …}

``Label`` "1" says the content is AI-generated; ``ContentProducer`` is the platform
(``CONTENT_LABEL_PRODUCER``: its name, or the provider code of the coding rules); ``ProduceID``
is the render output's id; ``ReservedCode1`` is the producer's own protection code, here an HMAC
of the producer fields with ``CONTENT_LABEL_SECRET``, so a label we did not write is told apart
from ours. ``ContentPropagator``/``PropagateID``/``ReservedCode2`` are filled when the gallery
hands a work out (a download): the platform again, ``work-<id>``, and an HMAC over both parts.

Where it is written:
- PNG (every stored original, every download): an ``iTXt`` chunk ``AIGC`` (the JSON), and an XMP
  packet (``iTXt`` ``XML:com.adobe.xmp``), spliced into the file without re-encoding the pixels,
  in place of any other text or EXIF (ComfyUI's prompt and workflow JSON).
- WebP/JPEG (thumbnails): the same XMP packet and EXIF ``ImageDescription`` (the JSON, ASCII);
  ``encode_derived`` encodes one, ``label_webp`` splices them into a still WebP already encoded
  (ComfyUI's), without re-encoding it and dropping the file's own EXIF/XMP.
The XMP packet carries ``TC260:AIGC`` (namespace ``http://www.tc260.org.cn/ns/AIGC/1.0/``, as in
the TC260 practice guide), IPTC's ``DigitalSourceType`` = ``trainedAlgorithmicMedia`` (what
international tools read) and the platform's own ``aigcp:JobId`` and ``aigcp:GeneratedAt``
(outside the ``AIGC`` object, which keeps the standard's keys only).

Metadata is not a watermark: any re-encoding that drops it (most editors' "export", screenshots,
chat apps) removes the label; copies made with metadata kept (exiftool, Pillow with ``exif=``/
``xmp=``, PNG re-saved with its text chunks) keep it and still verify.
"""
from __future__ import annotations

import hashlib
import hmac
import html
import io
import json
import logging
import os
import re
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from PIL import Image, ImageDraw, ImageFont

from shared.config import ConfigError, Settings, env_bool, env_str
from shared.secret_compare import same_secret

log = logging.getLogger(__name__)

AIGC_KEYS = ("Label", "ContentProducer", "ProduceID", "ReservedCode1", "ContentPropagator", "PropagateID",
             "ReservedCode2")
TC260_NS = "http://www.tc260.org.cn/ns/AIGC/1.0/"
IPTC_EXT_NS = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
PLATFORM_NS = "https://aigc-platform.local/ns/label/1.0/"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
XMP_KEYWORD = b"XML:com.adobe.xmp"
EXIF_IMAGE_DESCRIPTION = 0x010E
MAX_TEXT_BYTES = 1024 * 1024
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
# CJK fonts looked for when CONTENT_LABEL_FONT is not set (Debian/Ubuntu packages, then macOS).
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
)


@dataclass(frozen=True)
class LabelConfig:
    platform: str = "AIGC 创意工作流平台"
    producer: str = "AIGC 创意工作流平台"
    secret: bytes = b""
    visible: bool = True
    position: str = "bottom-right"
    opacity: float = 0.8
    font_path: str | None = None

    @property
    def visible_text(self) -> str:
        return f"AI生成 · {self.platform}"


def load_label_config(settings: Settings, env: Mapping[str, str] | None = None) -> LabelConfig:
    """``CONTENT_LABEL_PLATFORM``, ``CONTENT_LABEL_PRODUCER`` (default: the platform name),
    ``CONTENT_LABEL_SECRET`` (default: derived from the service token), ``CONTENT_LABEL_VISIBLE``
    (true), ``CONTENT_LABEL_POSITION`` (bottom-right), ``CONTENT_LABEL_OPACITY`` (0.8),
    ``CONTENT_LABEL_FONT`` (a font file with Chinese glyphs; default: the first of FONT_CANDIDATES)."""
    env = os.environ if env is None else env
    platform = env_str(env, "CONTENT_LABEL_PLATFORM", LabelConfig.platform)
    position = env_str(env, "CONTENT_LABEL_POSITION", "bottom-right").strip().lower()
    if position not in POSITIONS:
        raise ConfigError(f"CONTENT_LABEL_POSITION must be one of {', '.join(POSITIONS)}, got {position!r}")
    raw_opacity = env_str(env, "CONTENT_LABEL_OPACITY", "0.8")
    try:
        opacity = float(raw_opacity)
    except ValueError:
        opacity = -1.0
    if not 0.1 <= opacity <= 1.0:
        raise ConfigError(f"CONTENT_LABEL_OPACITY must be a number from 0.1 to 1, got {raw_opacity!r}")
    secret = env.get("CONTENT_LABEL_SECRET") or ""
    if not secret:
        # Like the media signing key: every process shares the service token, the label carries a derivation.
        secret = hmac.new(settings.service_token.encode(), b"content-label-v1", hashlib.sha256).hexdigest()
    font = env.get("CONTENT_LABEL_FONT") or ""
    if font and not Path(font).is_file():
        raise ConfigError(f"CONTENT_LABEL_FONT names no file: {font!r}")
    return LabelConfig(platform=platform, producer=env_str(env, "CONTENT_LABEL_PRODUCER", platform),
                       secret=secret.encode(), visible=env_bool(env, "CONTENT_LABEL_VISIBLE", True),
                       position=position, opacity=opacity, font_path=font or _first_font())


def _first_font() -> str | None:
    return next((path for path in FONT_CANDIDATES if Path(path).is_file()), None)


# The label itself

@dataclass(frozen=True)
class ImageLabel:
    """What the platform says about one image it made (and, once handed out, how)."""

    producer: str
    produce_id: str
    job_id: str
    generated_at: str  # ISO 8601, UTC
    propagator: str = ""
    propagate_id: str = ""


def _mac(secret: bytes, *parts: str) -> str:
    return "hmac-sha256:" + hmac.new(secret, "\n".join(parts).encode(), hashlib.sha256).hexdigest()[:32]


def _producer_code(label: ImageLabel, secret: bytes) -> str:
    return _mac(secret, "1", label.producer, label.produce_id, label.job_id, label.generated_at)


def _propagator_code(label: ImageLabel, secret: bytes) -> str:
    if not label.propagator:
        return ""
    return _mac(secret, _producer_code(label, secret), label.propagator, label.propagate_id)


def aigc_field(label: ImageLabel, secret: bytes) -> dict[str, str]:
    """The GB 45438-2025 ``AIGC`` object, keys in the standard's order."""
    return {"Label": "1", "ContentProducer": label.producer, "ProduceID": label.produce_id,
            "ReservedCode1": _producer_code(label, secret), "ContentPropagator": label.propagator,
            "PropagateID": label.propagate_id, "ReservedCode2": _propagator_code(label, secret)}


def _aigc_json(label: ImageLabel, secret: bytes, ascii_only: bool = False) -> str:
    return json.dumps(aigc_field(label, secret), ensure_ascii=ascii_only, separators=(",", ":"))


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


def xmp_packet(label: ImageLabel, secret: bytes) -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:TC260="{TC260_NS}" xmlns:Iptc4xmpExt="{IPTC_EXT_NS}" '
        f'xmlns:aigcp="{PLATFORM_NS}" TC260:AIGC="{_attr(_aigc_json(label, secret))}" '
        f'Iptc4xmpExt:DigitalSourceType="{TRAINED_ALGORITHMIC_MEDIA}" '
        f'aigcp:JobId="{_attr(label.job_id)}" aigcp:GeneratedAt="{_attr(label.generated_at)}"/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode("utf-8")


# Writing

def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _itxt(keyword: bytes, text: bytes) -> bytes:
    # keyword NUL, compression flag 0, method 0, language tag "" NUL, translated keyword "" NUL, text
    return _chunk(b"iTXt", keyword + b"\x00\x00\x00\x00\x00" + text)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, whole chunk bytes) of a PNG; ValueError when it is not one."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset + 12 <= len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind = data[offset + 4:offset + 8]
        end = offset + 12 + length
        if end > len(data):
            raise ValueError("truncated PNG chunk")
        chunks.append((kind, data[offset:end]))
        offset = end
        if kind == b"IEND":
            break
    return chunks


def whole_png_size(data: bytes) -> tuple[int, int] | None:
    """The size of a PNG, checked whole: every chunk complete with its checksum, the header first
    with a non-empty size, image data present, the end chunk last (what a transfer cut short or
    corrupted, or a bad disk, breaks; Pillow's decoder checks none of the image data's checksums).
    The pixels are not inflated (most of a decode's time), so this alone does not prove that they
    decode. None when the file is not a PNG; ValueError when it is a broken one."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    chunks = _png_chunks(data)
    kinds = [kind for kind, _ in chunks]
    if kinds[:1] != [b"IHDR"] or len(chunks[0][1]) != 25 or kinds[-1:] != [b"IEND"] or b"IDAT" not in kinds:
        raise ValueError("a PNG without its header, image data or end")
    if any(zlib.crc32(chunk[4:-4]) != struct.unpack(">I", chunk[-4:])[0] for _, chunk in chunks):
        raise ValueError("a PNG chunk with a wrong checksum")
    width, height = struct.unpack(">II", chunks[0][1][8:16])
    if not width or not height:
        raise ValueError("a PNG of no size")
    return width, height


# Metadata chunks of a PNG: text (ComfyUI writes its prompt and workflow JSON as ``tEXt``), and EXIF.
_METADATA_CHUNKS = (b"tEXt", b"iTXt", b"zTXt", b"eXIf")


def label_png(data: bytes, label: ImageLabel, secret: bytes) -> bytes:
    """The PNG with our ``AIGC`` and XMP chunks before its first IDAT, and no other text or EXIF
    (an earlier label, and ComfyUI's prompt and workflow, which would publish the server's graph,
    model files and upload names with the image); pixels and other chunks untouched."""
    ours = _itxt(b"AIGC", _aigc_json(label, secret).encode("utf-8")) + _itxt(XMP_KEYWORD, xmp_packet(label, secret))
    out = [PNG_SIGNATURE]
    placed = False
    for kind, chunk in _png_chunks(data):
        if kind in _METADATA_CHUNKS:
            continue
        if kind == b"IDAT" and not placed:
            out.append(ours)
            placed = True
        out.append(chunk)
    return b"".join(out)


def _exif(label: ImageLabel, secret: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif[EXIF_IMAGE_DESCRIPTION] = _aigc_json(label, secret, ascii_only=True)
    return exif


# A WebP container: RIFF "WEBP", then chunks (FourCC, little-endian 32-bit size, payload padded to even
# length). A still extended file is VP8X, [ICCP], [ALPH] + VP8 or VP8L, [EXIF], [XMP ]. VP8X flags:
# 0x20 ICC profile, 0x10 alpha, 0x08 EXIF, 0x04 XMP, 0x02 animation.
WEBP_BITSTREAMS = (b"VP8 ", b"VP8L")
WEBP_PICTURE_CHUNKS = (b"ICCP", b"ALPH") + WEBP_BITSTREAMS


@dataclass(frozen=True)
class _StillWebP:
    chunks: list[tuple[bytes, bytes]]  # (FourCC, payload), in file order
    size: tuple[int, int]  # the canvas
    alpha: bool


def _still_webp(data: bytes) -> _StillWebP:
    """The chunks, canvas and alpha of a still WebP, read from the headers; ValueError otherwise."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP file")
    end = 8 + struct.unpack("<I", data[4:8])[0]
    if end > len(data):
        raise ValueError("truncated WebP file")
    chunks, offset = [], 12
    while offset < end:
        if offset + 8 > end:
            raise ValueError("truncated WebP chunk")
        kind, (length,) = data[offset:offset + 4], struct.unpack("<I", data[offset + 4:offset + 8])
        if offset + 8 + length > end:
            raise ValueError("truncated WebP chunk")
        chunks.append((kind, data[offset + 8:offset + 8 + length]))
        offset += 8 + length + (length & 1)
    kinds = [kind for kind, _ in chunks]
    if b"ANIM" in kinds or b"ANMF" in kinds:
        raise ValueError("an animated WebP")
    bitstreams = [(kind, payload) for kind, payload in chunks if kind in WEBP_BITSTREAMS]
    if len(bitstreams) != 1:
        raise ValueError("a WebP without exactly one VP8/VP8L bitstream")
    kind, payload = bitstreams[0]
    if kind == b"VP8 ":
        # Frame tag (3 bytes, bit 0 clear on a key frame), start code 9d 01 2a, 14-bit width and height.
        if len(payload) < 10 or payload[0] & 1 or payload[3:6] != b"\x9d\x01\x2a":
            raise ValueError("a VP8 bitstream without a key frame header")
        width, height = struct.unpack("<HH", payload[6:10])
        size, alpha = (width & 0x3FFF, height & 0x3FFF), b"ALPH" in kinds
        if not all(size):
            raise ValueError("a VP8 bitstream of no size")
    else:
        # Signature 0x2f, then width-1 (14 bits), height-1 (14 bits), alpha_is_used (1 bit), version (3 bits).
        if len(payload) < 5 or payload[0] != 0x2F:
            raise ValueError("a VP8L bitstream without its header")
        (bits,) = struct.unpack("<I", payload[1:5])
        size, alpha = ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1), bool(bits >> 28 & 1)
    if kinds[0] == b"VP8X":
        vp8x = chunks[0][1]
        if len(vp8x) < 10:
            raise ValueError("a VP8X chunk too short")
        size = (int.from_bytes(vp8x[4:7], "little") + 1, int.from_bytes(vp8x[7:10], "little") + 1)
    return _StillWebP(chunks=chunks, size=size, alpha=alpha)


def webp_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a still WebP's canvas, from its headers; ValueError when it is not one."""
    return _still_webp(data).size


def _riff_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) & 1)


def label_webp(data: bytes, label: ImageLabel, secret: bytes) -> bytes:
    """A still WebP (as ComfyUI's SaveAnimatedWEBP writes one frame) labelled as ``encode_derived``
    labels one, without re-encoding: a VP8X header, its ICC profile and bitstream (ALPH, VP8/VP8L)
    as they are, then our EXIF and XMP. Every other chunk goes (the file's own EXIF/XMP carry
    ComfyUI's prompt and workflow, and a thumbnail is public). ValueError when it is not a still WebP."""
    webp = _still_webp(data)
    kept = [(kind, payload) for kind, payload in webp.chunks if kind in WEBP_PICTURE_CHUNKS]
    flags = 0x08 | 0x04 | (0x10 if webp.alpha else 0) | (0x20 if any(kind == b"ICCP" for kind, _ in kept) else 0)
    width, height = webp.size
    vp8x = bytes([flags, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    exif = _exif(label, secret).tobytes().removeprefix(b"Exif\x00\x00")  # as Pillow writes it into a WebP
    body = b"WEBP" + b"".join(_riff_chunk(kind, payload) for kind, payload in
                              [(b"VP8X", vp8x), *kept, (b"EXIF", exif), (b"XMP ", xmp_packet(label, secret))])
    return b"RIFF" + struct.pack("<I", len(body)) + body


def encode_derived(image: Image.Image, image_format: str, label: ImageLabel, secret: bytes,
                   **options: Any) -> bytes:
    """Encode a derived WebP or JPEG carrying the label in XMP and EXIF."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, exif=_exif(label, secret), xmp=xmp_packet(label, secret), **options)
    return buffer.getvalue()


# Reading

@dataclass(frozen=True)
class FoundLabel:
    """A label read from a file: its ``AIGC`` object, where it was found, and whether we wrote it."""

    aigc: dict[str, str]
    source: str  # png-text | xmp | exif
    job_id: str | None
    generated_at: str | None
    authentic: bool

    @property
    def produce_id(self) -> str:
        return self.aigc.get("ProduceID", "")


XMP_AIGC = re.compile(r'TC260:AIGC\s*=\s*"([^"]*)"|<TC260:AIGC>([^<]*)</TC260:AIGC>')


def _xmp_value(xmp: str, name: str) -> str | None:
    match = re.search(rf'aigcp:{name}\s*=\s*"([^"]*)"|<aigcp:{name}>([^<]*)</aigcp:{name}>', xmp)
    return html.unescape(match.group(1) or match.group(2) or "") if match else None


def _inflate(data: bytes) -> bytes:
    """A compressed text chunk, at most MAX_TEXT_BYTES of it (an uploaded file may be a zip bomb)."""
    return zlib.decompressobj().decompress(data, MAX_TEXT_BYTES)


def _png_text(data: bytes) -> dict[str, str]:
    """The text chunks of a PNG (tEXt, zTXt, iTXt), read from the chunk list without decoding pixels."""
    text: dict[str, str] = {}
    for kind, chunk in _png_chunks(data):
        if kind not in (b"tEXt", b"zTXt", b"iTXt"):
            continue
        keyword, _, rest = chunk[8:-4].partition(b"\x00")
        if kind == b"tEXt":
            value = rest.decode("latin-1")
        elif kind == b"zTXt":
            value = _inflate(rest[1:]).decode("latin-1")
        else:
            compressed, body = rest[:1] == b"\x01", rest[2:]
            body = body.split(b"\x00", 2)[-1]  # after the language tag and the translated keyword
            value = (_inflate(body) if compressed else body).decode("utf-8", "replace")
        text.setdefault(keyword.decode("latin-1"), value)
    return text


def _parse_aigc(raw: str | None) -> dict[str, str] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, dict) or "Label" not in value:
        return None
    return {key: str(value.get(key, "")) for key in AIGC_KEYS}


def read_label(data: bytes, secret: bytes) -> FoundLabel | None:
    """The label an image file carries (PNG text, XMP, or EXIF, in that order), or None.
    ``authentic`` is whether its protection codes are ours (nothing else checks the pixels)."""
    try:
        text = _png_text(data) if data.startswith(PNG_SIGNATURE) else {}
        with Image.open(io.BytesIO(data)) as image:  # reads the headers, never the pixels
            xmp_raw = text.get(XMP_KEYWORD.decode()) or image.info.get("xmp") or b""
            if image.format == "PNG":  # Pillow's getexif() would decode a PNG's pixels to look after them
                exif = Image.Exif()
                if image.info.get("exif"):
                    exif.load(image.info["exif"])
            else:
                exif = image.getexif()
    except (OSError, SyntaxError, ValueError, zlib.error, Image.DecompressionBombError):
        return None
    xmp = xmp_raw.decode("utf-8", "replace") if isinstance(xmp_raw, bytes) else str(xmp_raw)
    found: tuple[dict[str, str], str] | None = None
    if (aigc := _parse_aigc(text.get("AIGC"))) is not None:
        found = (aigc, "png-text")
    elif (match := XMP_AIGC.search(xmp)) and (aigc := _parse_aigc(html.unescape(match.group(1) or match.group(2)))):
        found = (aigc, "xmp")
    elif (aigc := _parse_aigc(exif.get(EXIF_IMAGE_DESCRIPTION))) is not None:
        found = (aigc, "exif")
    if found is None:
        return None
    aigc, source = found
    job_id, generated_at = _xmp_value(xmp, "JobId"), _xmp_value(xmp, "GeneratedAt")
    authentic = False
    if job_id is not None and generated_at is not None:
        label = ImageLabel(aigc["ContentProducer"], aigc["ProduceID"], job_id, generated_at,
                           aigc["ContentPropagator"], aigc["PropagateID"])
        expected = aigc_field(label, secret)
        authentic = aigc["Label"] == "1" and all(
            same_secret(aigc[key], expected[key]) for key in ("ReservedCode1", "ReservedCode2"))
    return FoundLabel(aigc=aigc, source=source, job_id=job_id, generated_at=generated_at, authentic=authentic)


def label_of(data: bytes, secret: bytes) -> ImageLabel | None:
    """Our own label of a stored image (authentic only), to carry it on to a derived file."""
    found = read_label(data, secret)
    if found is None or not found.authentic:
        return None
    return ImageLabel(found.aigc["ContentProducer"], found.aigc["ProduceID"], found.job_id or "",
                      found.generated_at or "")


# The explicit label

_font_warned = False


def _font(config: LabelConfig, size: int) -> tuple[ImageFont.FreeTypeFont | ImageFont.ImageFont, bool]:
    """(font, renders Chinese). Without a CJK font the label falls back to Latin text."""
    global _font_warned
    if config.font_path:
        try:
            return ImageFont.truetype(config.font_path, size), True
        except OSError:
            pass
    if not _font_warned:
        _font_warned = True
        log.warning("no usable CJK font (CONTENT_LABEL_FONT=%r, none of %s found): the visible label is drawn "
                    "as \"AI-generated\" in Pillow's default font; install fonts-wqy-zenhei or set "
                    "CONTENT_LABEL_FONT", config.font_path, ", ".join(FONT_CANDIDATES))
    return ImageFont.load_default(size), False


def draw_visible_label(image: Image.Image, config: LabelConfig) -> Image.Image:
    """The image with "AI生成 · <platform>" in a translucent box at the configured corner."""
    base = image.convert("RGBA")
    width, height = base.size
    size = max(12, round(min(width, height) * 0.035))
    font, cjk = _font(config, size)
    text = config.visible_text
    if not cjk:
        text = f"AI-generated · {config.platform.encode('ascii', 'ignore').decode().strip() or 'AIGC'}"
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad, margin = max(4, size // 3), max(6, size // 2)
    box_w, box_h = right - left + 2 * pad, bottom - top + 2 * pad
    x = margin if config.position.endswith("left") else width - box_w - margin
    y = margin if config.position.startswith("top") else height - box_h - margin
    alpha = round(255 * config.opacity)
    draw.rounded_rectangle((x, y, x + box_w, y + box_h), radius=pad, fill=(0, 0, 0, round(alpha * 0.55)))
    draw.text((x + pad - left, y + pad - top), text, font=font, fill=(255, 255, 255, alpha))
    return Image.alpha_composite(base, overlay)


def download_copy(data: bytes, config: LabelConfig, propagate_id: str | None, visible: bool) -> bytes:
    """A stored PNG as handed out: the visible label drawn on it when ``visible``, and the implicit
    label, with the platform as propagator when ``propagate_id`` is given."""
    label = label_of(data, config.secret)
    if visible:
        with Image.open(io.BytesIO(data)) as original:
            marked = draw_visible_label(original, config)
            if original.mode not in ("RGBA", "LA", "P"):
                marked = marked.convert("RGB")
        buffer = io.BytesIO()
        marked.save(buffer, format="PNG", compress_level=1)  # a download is made per request: speed over bytes
        data = buffer.getvalue()
    if label is None:  # not ours (an image stored before labels existed): say nothing we cannot sign
        return data
    if propagate_id is not None:
        label = replace(label, propagator=config.producer, propagate_id=propagate_id)
    return label_png(data, label, config.secret)
