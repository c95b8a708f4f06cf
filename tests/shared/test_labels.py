"""The label mechanism itself: settings, writing a PNG twice, reading hostile or foreign files."""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from shared.config import ConfigError, load_settings
from shared.labels import (AIGC_KEYS, ImageLabel, encode_derived, label_png, load_label_config, read_label,
                           xmp_packet)

SECRET = b"k"
LABEL = ImageLabel("平台", "out-1", "job-1", "2026-12-04T10:00:00Z")


def _png(size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


def _settings(tmp_path: Path):
    return load_settings({"APP_ENV": "test", "DATA_DIR": str(tmp_path), "SERVICE_TOKEN": "t"})


def test_settings_are_typed_and_checked(tmp_path):
    settings = _settings(tmp_path)
    default = load_label_config(settings, {})
    assert default.visible and default.position == "bottom-right" and default.opacity == 0.8
    assert default.producer == default.platform == "AIGC 创意工作流平台" and len(default.secret) == 64
    assert default.visible_text == "AI生成 · AIGC 创意工作流平台"
    custom = load_label_config(settings, {"CONTENT_LABEL_PLATFORM": "画坊", "CONTENT_LABEL_PRODUCER": "P-123",
                                          "CONTENT_LABEL_VISIBLE": "false", "CONTENT_LABEL_POSITION": "Top-Left",
                                          "CONTENT_LABEL_OPACITY": "0.4", "CONTENT_LABEL_SECRET": "s"})
    assert (custom.platform, custom.producer, custom.visible, custom.position, custom.opacity, custom.secret) == \
        ("画坊", "P-123", False, "top-left", 0.4, b"s")
    for env in ({"CONTENT_LABEL_POSITION": "middle"}, {"CONTENT_LABEL_OPACITY": "2"},
                {"CONTENT_LABEL_OPACITY": "half"}, {"CONTENT_LABEL_FONT": str(tmp_path / "missing.ttf")},
                {"CONTENT_LABEL_VISIBLE": "maybe"}):
        with pytest.raises(ConfigError):
            load_label_config(settings, env)


def test_the_aigc_field_has_exactly_the_standards_keys_in_order():
    found = read_label(label_png(_png(), LABEL, SECRET), SECRET)
    assert tuple(found.aigc) == AIGC_KEYS and found.aigc["Label"] == "1"
    assert found.aigc["ContentPropagator"] == found.aigc["PropagateID"] == found.aigc["ReservedCode2"] == ""


def test_labelling_twice_replaces_the_label_and_keeps_the_pixels():
    original = _png()
    once = label_png(original, LABEL, SECRET)
    twice = label_png(once, ImageLabel("平台", "out-2", "job-2", "2026-12-04T11:00:00Z"), SECRET)
    assert label_png(once, LABEL, SECRET) == once  # deterministic: a repeated attempt stores the same bytes
    assert twice.count(b"iTXtAIGC") == 1 and twice.count(b"XML:com.adobe.xmp") == 1
    assert read_label(twice, SECRET).produce_id == "out-2"
    with Image.open(io.BytesIO(twice)) as labelled, Image.open(io.BytesIO(original)) as plain:
        assert labelled.tobytes() == plain.tobytes()


def test_a_jpeg_keeps_the_label_in_exif_when_xmp_is_dropped():
    image = Image.new("RGB", (16, 16))
    jpeg = encode_derived(image, "JPEG", LABEL, SECRET, quality=80)
    with Image.open(io.BytesIO(jpeg)) as opened:
        exif_only = io.BytesIO()
        opened.save(exif_only, "JPEG", exif=opened.getexif())
    found = read_label(exif_only.getvalue(), SECRET)
    assert found.source == "exif" and found.produce_id == "out-1"
    assert not found.authentic  # the job id and time lived in the XMP packet: not enough to vouch for it


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def test_hostile_and_foreign_files_read_as_unlabelled_or_not_ours():
    assert read_label(b"", SECRET) is None and read_label(b"\x89PNG\r\n\x1a\n", SECRET) is None
    assert read_label(_png()[:40], SECRET) is None
    png = _png()
    iend = png.rindex(b"IEND") - 4
    # A compressed text chunk that inflates to 100 MB is read only up to a bound.
    bomb = _chunk(b"iTXt", b"AIGC\x00\x01\x00\x00\x00" + zlib.compress(b" " * 100_000_000, 9))
    assert read_label(png[:iend] + bomb + png[iend:], SECRET) is None
    foreign = json.dumps({"Label": "1", "ContentProducer": "someone", "ProduceID": "x"}).encode()
    found = read_label(png[:iend] + _chunk(b"tEXt", b"AIGC\x00" + foreign) + png[iend:], SECRET)
    assert found.source == "png-text" and found.aigc["ContentProducer"] == "someone" and not found.authentic
    assert read_label(label_png(png, LABEL, b"another key"), SECRET).authentic is False
    assert b"trainedAlgorithmicMedia" in xmp_packet(LABEL, SECRET)
