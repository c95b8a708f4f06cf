"""The label mechanism itself: settings, writing a PNG twice, reading hostile or foreign files."""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageCms

from shared.config import ConfigError, load_settings
from shared.labels import (AIGC_KEYS, EXIF_IMAGE_DESCRIPTION, ImageLabel, encode_derived, label_png, label_webp,
                           load_label_config, read_label, webp_size, xmp_packet)

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


def test_comfyuis_prompt_and_workflow_never_reach_a_stored_png():
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()  # what ComfyUI's SaveImage writes
    info.add_text("prompt", json.dumps({"4": {"class_type": "CheckpointLoaderSimple",
                                               "inputs": {"ckpt_name": "house_secret.safetensors"}}}))
    info.add_text("workflow", json.dumps({"nodes": [{"type": "LoadImage", "widgets_values": ["aigc-job-1.png"]}]}),
                  zip=True)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buffer, "PNG", pnginfo=info, exif=Image.Exif())
    comfyui = buffer.getvalue()
    labelled = label_png(comfyui, LABEL, SECRET)
    with Image.open(io.BytesIO(labelled)) as stored, Image.open(io.BytesIO(comfyui)) as plain:
        assert set(plain.text) == {"prompt", "workflow"}
        assert set(stored.text) == {"AIGC", "XML:com.adobe.xmp"} and stored.tobytes() == plain.tobytes()
    assert b"house_secret" not in labelled and read_label(labelled, SECRET).authentic


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


def _picture(mode: str) -> Image.Image:
    image = Image.radial_gradient("L").resize((37, 21)).convert(mode)
    if mode == "RGBA":
        image.putalpha(Image.linear_gradient("L").resize((37, 21)))
    return image


def _comfy_exif() -> Image.Exif:
    """What ComfyUI's SaveAnimatedWEBP puts in: the prompt in Model (0x0110), the workflow in Make."""
    exif = Image.Exif()
    exif[0x0110] = 'prompt:{"3":{"class_type":"KSampler","inputs":{"seed":1}}}'
    exif[0x010F] = 'workflow:{"nodes":[]}'
    return exif


def _webp(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", save_all=True, **options)  # one frame: a still WebP, as ComfyUI saves it
    return buffer.getvalue()


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
FOREIGN_XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><foreign>prompt:a cat</foreign></x:xmpmeta>'


@pytest.mark.parametrize("mode, first_chunk, pixel_options, foreign", [
    ("RGB", b"VP8 ", {"quality": 80}, {}),
    ("RGBA", b"VP8L", {"lossless": True}, {}),
    ("RGB", b"VP8X", {"quality": 80}, {"exif": _comfy_exif()}),
    ("RGBA", b"VP8X", {"quality": 80, "icc_profile": SRGB}, {"exif": _comfy_exif(), "xmp": FOREIGN_XMP}),
], ids=["lossy-vp8", "lossless-vp8l-alpha", "vp8x-foreign-exif", "vp8x-alpha-icc-foreign-exif-xmp"])
def test_a_comfyui_webp_is_labelled_as_encode_derived_labels_it_without_re_encoding(mode, first_chunk, pixel_options,
                                                                                   foreign):
    image = _picture(mode)
    original = _webp(image, **pixel_options, **foreign)
    assert original[12:16] == first_chunk and (b"prompt:" in original) == bool(foreign)
    labelled = label_webp(original, LABEL, SECRET)
    # Chunk for chunk what encode_derived writes for the same picture: VP8X, [ICCP], [ALPH], bitstream, EXIF, XMP.
    assert labelled == encode_derived(image, "WEBP", LABEL, SECRET, **pixel_options)
    assert b"prompt:" not in labelled and b"workflow:" not in labelled  # a thumbnail is public
    found = read_label(labelled, SECRET)
    assert found.authentic and found.source == "xmp" and found.job_id == "job-1"
    assert found.aigc == read_label(encode_derived(image, "WEBP", LABEL, SECRET), SECRET).aigc
    assert webp_size(labelled) == webp_size(original) == (37, 21)
    with Image.open(io.BytesIO(labelled)) as ours, Image.open(io.BytesIO(original)) as theirs:
        ours.load()
        assert (ours.mode, ours.size, ours.tobytes()) == (theirs.mode, theirs.size, theirs.tobytes())
        assert ours.info["xmp"] == xmp_packet(LABEL, SECRET)
        assert ours.info.get("icc_profile") == pixel_options.get("icc_profile")
        assert dict(ours.getexif()) == {EXIF_IMAGE_DESCRIPTION: json.dumps(found.aigc, separators=(",", ":"))}


def test_anything_but_a_still_webp_is_refused():
    two_frames = _webp(_picture("RGB"), append_images=[_picture("RGB").rotate(90)])
    still = _webp(_picture("RGB"))
    no_bitstream = b"RIFF" + struct.pack("<I", 4 + 8 + 2) + b"WEBPICCP" + struct.pack("<I", 2) + b"\x00\x00"
    for data, reason in ((two_frames, "animated"), (_png(), "not a WebP"), (still[:-7], "truncated"),
                         (still[:30], "truncated"), (b"RIFF", "not a WebP"), (no_bitstream, "bitstream")):
        with pytest.raises(ValueError, match=reason):
            label_webp(data, LABEL, SECRET)
        with pytest.raises(ValueError, match=reason):
            webp_size(data)
