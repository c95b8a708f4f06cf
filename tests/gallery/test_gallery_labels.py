"""AI-content labels through the gallery: a labelled output stays labelled when saved (its own
copy) and in its thumbnail; a download carries the visible label and the implicit one with the
gallery as propagator; the verification endpoint on labelled, re-encoded and unlabelled images.
Every file is read back with Pillow."""
from __future__ import annotations

import io
import os
import random
import uuid
from dataclasses import replace

import pytest
from PIL import Image, ImageChops
from PIL.PngImagePlugin import PngInfo

from services.gallery.app import create_app
from services.render_worker.pipeline import _store
from shared.labels import FONT_CANDIDATES, ImageLabel, LabelConfig, draw_visible_label, read_label

from tests.gallery.conftest import close_app


def _picture(size: tuple[int, int] = (320, 240)) -> bytes:
    """A noisy picture (so a drawn label changes pixels that differ from their neighbours)."""
    image = Image.frombytes("RGB", size, random.randbytes(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _labelled_output(app, fake_gateway, user_id: int) -> tuple[str, str]:
    """Store a picture as the render worker does (labelled original and thumbnail) and record it as
    an output of ``user_id``; returns (output id, job id)."""
    storage = app.extensions["gallery"].files.storage
    config = app.extensions["gallery"].labels.config
    output_id, job_id = uuid.uuid4().hex, uuid.uuid4().hex
    label = ImageLabel(config.producer, output_id, job_id, "2026-12-04T10:00:00Z")
    file = _store(storage, 0, _picture(), label, config.secret)
    template = fake_gateway.outputs[fake_gateway.add_output(user_id)]
    fake_gateway.outputs[output_id] = {**template, "id": output_id, "jobId": job_id, "imageKey": file.image_key,
                                       "thumbnailKey": file.thumbnail_key, "width": file.width,
                                       "height": file.height, "sha256": file.sha256}
    return output_id, job_id


def _read(app, key: str) -> bytes:
    return app.extensions["gallery"].files.storage.read(key)


def _pixels(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def _changed_box(before: bytes, after: bytes) -> tuple[int, int, int, int] | None:
    return ImageChops.difference(_pixels(before), _pixels(after)).getbbox()


def test_a_saved_work_keeps_the_label_in_its_image_and_thumbnail(app, fake_gateway, make_user):
    alice = make_user()
    output_id, job_id = _labelled_output(app, fake_gateway, alice.user_id)
    secret = app.extensions["gallery"].labels.config.secret

    work = alice.post("/api/works/save", json={"outputId": output_id, "title": "灯塔"}).get_json()["data"]["work"]

    output = fake_gateway.outputs[output_id]
    for source in (output["imageKey"], output["thumbnailKey"]):
        copy = _read(app, "works/" + source)
        assert copy == _read(app, source)  # the work's own copy is the labelled file itself
        found = read_label(copy, secret)
        assert found is not None and found.authentic
        assert found.aigc["Label"] == "1" and found.aigc["ProduceID"] == output_id and found.job_id == job_id
        assert found.aigc["ContentProducer"] == "AIGC 创意工作流平台"
        assert found.generated_at == "2026-12-04T10:00:00Z"
    with Image.open(io.BytesIO(_read(app, output["imageKey"]))) as image:
        assert image.format == "PNG" and '"Label":"1"' in image.text["AIGC"]
        assert "trainedAlgorithmicMedia" in image.text["XML:com.adobe.xmp"]
    with Image.open(io.BytesIO(_read(app, output["thumbnailKey"]))) as thumbnail:
        assert thumbnail.format == "WEBP"
        assert b"TC260:AIGC" in thumbnail.info["xmp"]
        assert output_id in thumbnail.getexif()[0x010E]
    assert read_label(_read(app, output["thumbnailKey"]), secret).source == "xmp"
    assert work["outputId"] == output_id


def test_a_download_carries_the_visible_label_and_the_gallery_as_propagator(app, fake_gateway, make_user):
    alice, bob = make_user(), make_user()
    output_id, job_id = _labelled_output(app, fake_gateway, alice.user_id)
    work = alice.post("/api/works/save", json={"outputId": output_id, "title": "灯塔", "isPublic": True}
                      ).get_json()["data"]["work"]
    stored = _read(app, fake_gateway.outputs[output_id]["imageKey"])

    response = bob.get(f"/api/works/{work['id']}/download")

    assert response.status_code == 200 and response.mimetype == "image/png"
    found = read_label(response.data, app.extensions["gallery"].labels.config.secret)
    assert found is not None and found.authentic and found.source == "png-text"
    assert found.aigc["ProduceID"] == output_id and found.job_id == job_id
    assert found.aigc["ContentPropagator"] == "AIGC 创意工作流平台" and found.aigc["PropagateID"] == f"work-{work['id']}"
    assert found.aigc["ReservedCode2"].startswith("hmac-sha256:")
    left, top, right, bottom = _changed_box(stored, response.data)
    assert 0 < left and right > 300 and top > 240 / 2 and bottom > 220  # drawn in the bottom-right corner only


def test_the_label_position_and_the_visible_switch_are_settings(settings, fake_gateway, issue_token,
                                                                service_headers):
    from shared.labels import load_label_config
    for env, expect_drawn in (({"CONTENT_LABEL_POSITION": "top-left", "CONTENT_LABEL_OPACITY": "0.5"}, True),
                              ({"CONTENT_LABEL_VISIBLE": "false"}, False)):
        app = create_app(settings)
        try:
            labels = app.extensions["gallery"].labels
            labels.config = load_label_config(settings, env)
            owner_id = random.randint(10**6, 10**9)
            output_id, _ = _labelled_output(app, fake_gateway, owner_id)
            headers = {**service_headers, "Authorization": f"Bearer {issue_token(owner_id, f'u{owner_id}')}"}
            client = app.test_client()
            saved = client.post("/api/works/save", json={"outputId": output_id, "title": "t"}, headers=headers)
            work_id = saved.get_json()["data"]["work"]["id"]
            download = client.get(f"/api/works/{work_id}/download", headers=headers).data
            changed = _changed_box(_read(app, fake_gateway.outputs[output_id]["imageKey"]), download)
            if expect_drawn:
                assert changed is not None and changed[0] < 20 and changed[1] < 20
                assert changed[2] < 300 and changed[3] < 240 / 2  # the top-left corner only
            else:
                assert changed is None  # same pixels, and still the implicit label
            assert read_label(download, labels.config.secret).aigc["PropagateID"] == f"work-{work_id}"
        finally:
            close_app(app)


@pytest.mark.skipif(not any(os.path.exists(path) for path in FONT_CANDIDATES),
                    reason="no CJK font installed")
def test_the_visible_label_is_drawn_with_a_cjk_font_and_falls_back_without_one(caplog):
    from shared.labels import _font
    config = LabelConfig(font_path=next(p for p in FONT_CANDIDATES if os.path.exists(p)))
    font, cjk = _font(config, 24)
    assert cjk and font.getbbox("生")[2] > 0 and font.getmask("生").getbbox() is not None
    base = Image.new("RGB", (400, 300), (10, 10, 10))
    assert ImageChops.difference(base, draw_visible_label(base, config).convert("RGB")).getbbox() is not None
    fallback = replace(config, font_path=None)
    assert _font(fallback, 24)[1] is False
    assert ImageChops.difference(base, draw_visible_label(base, fallback).convert("RGB")).getbbox() is not None


# Verification

def _upload(data: bytes, field: str = "file") -> dict:
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"x\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return {"data": body, "content_type": f"multipart/form-data; boundary={boundary}"}


def test_verify_a_labelled_image_names_the_work_to_those_who_may_see_it(app, fake_gateway, make_user, anonymous):
    alice, bob = make_user(), make_user()
    output_id, job_id = _labelled_output(app, fake_gateway, alice.user_id)
    work = alice.post("/api/works/save", json={"outputId": output_id, "title": "灯塔", "isPublic": False}
                      ).get_json()["data"]["work"]
    original = _read(app, fake_gateway.outputs[output_id]["imageKey"])

    mine = alice.post("/api/works/verify-label", **_upload(original)).get_json()["data"]["verification"]
    assert mine["labelled"] and mine["ours"] and mine["source"] == "png-text" and mine["format"] == "PNG"
    assert mine["jobId"] == job_id and mine["aigc"]["ProduceID"] == output_id
    assert mine["work"] == {"id": work["id"], "title": "灯塔", "public": False}
    # A private work is not named to others; that the file is ours still is.
    for caller in (bob, anonymous):
        theirs = caller.post("/api/works/verify-label", **_upload(original)).get_json()["data"]["verification"]
        assert theirs["ours"] and theirs["jobId"] == job_id and theirs["work"] is None
    # The download (visible label drawn, pixels re-encoded) and the thumbnail verify too.
    download = alice.get(f"/api/works/{work['id']}/download").data
    thumbnail = _read(app, fake_gateway.outputs[output_id]["thumbnailKey"])
    for data, source in ((download, "png-text"), (thumbnail, "xmp")):
        answer = anonymous.post("/api/works/verify-label", **_upload(data, "image")).get_json()["data"]["verification"]
        assert answer["ours"] and answer["source"] == source and answer["aigc"]["ProduceID"] == output_id


def test_verify_a_re_encoded_copy_keeps_the_label_only_when_its_metadata_was_kept(app, fake_gateway, make_user,
                                                                                   anonymous):
    alice = make_user()
    output_id, job_id = _labelled_output(app, fake_gateway, alice.user_id)
    original = _read(app, fake_gateway.outputs[output_id]["imageKey"])
    with Image.open(io.BytesIO(original)) as image:
        xmp = image.text["XML:com.adobe.xmp"].encode()
        kept, dropped = io.BytesIO(), io.BytesIO()
        image.convert("RGB").save(kept, "JPEG", quality=70, xmp=xmp)  # an editor that keeps XMP
        image.convert("RGB").save(dropped, "JPEG", quality=70)  # a screenshot, a chat app

    kept_answer = anonymous.post("/api/works/verify-label", **_upload(kept.getvalue())).get_json()["data"]
    assert kept_answer["verification"]["format"] == "JPEG" and kept_answer["verification"]["ours"]
    assert kept_answer["verification"]["source"] == "xmp" and kept_answer["verification"]["jobId"] == job_id

    dropped_answer = anonymous.post("/api/works/verify-label", **_upload(dropped.getvalue())).get_json()["data"]
    assert dropped_answer["verification"]["labelled"] is False and dropped_answer["verification"]["ours"] is False


def test_verify_an_unlabelled_a_forged_and_a_non_image_file(app, fake_gateway, make_user, anonymous):
    plain = anonymous.post("/api/works/verify-label", **_upload(_picture())).get_json()["data"]["verification"]
    assert plain == {"format": "PNG", "labelled": False, "ours": False, "source": None, "aigc": None,
                     "jobId": None, "generatedAt": None, "work": None}

    alice = make_user()
    output_id, _ = _labelled_output(app, fake_gateway, alice.user_id)
    original = _read(app, fake_gateway.outputs[output_id]["imageKey"])
    forged = io.BytesIO()
    with Image.open(io.BytesIO(original)) as image:  # another work's id under the same protection codes
        info = PngInfo()
        for key, value in image.text.items():
            info.add_itxt(key, value.replace(output_id, uuid.uuid4().hex))
        image.save(forged, "PNG", pnginfo=info)
    answer = anonymous.post("/api/works/verify-label", **_upload(forged.getvalue())).get_json()["data"]["verification"]
    assert answer["labelled"] and not answer["ours"] and answer["work"] is None and answer["jobId"] is None

    bad = anonymous.post("/api/works/verify-label", **_upload(b"not an image at all"))
    assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "INVALID_IMAGE"
    missing = anonymous.post("/api/works/verify-label", data={}, content_type="multipart/form-data; boundary=x")
    assert missing.status_code == 400 and missing.get_json()["error"]["code"] == "NO_FILE"
