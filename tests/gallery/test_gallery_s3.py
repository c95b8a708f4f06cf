"""The S3 implementation of storage, against a real local S3-compatible server (moto's)."""
from __future__ import annotations

import sys
from dataclasses import replace
import uuid

import boto3
import pytest
from sqlalchemy import func, select

from services.gallery.models import Work
from shared.config import load_settings
from shared.embedded import free_port
from shared.storage import S3Storage, StorageError, content_key, make_storage
from tests.conftest import answers, running_process

CREDENTIALS = {"S3_ACCESS_KEY_ID": "test", "S3_SECRET_ACCESS_KEY": "test", "S3_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_endpoint():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running_process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], answers(url),
                         "the local S3 server", timeout=30):
        yield url


@pytest.fixture
def s3_env(settings_env, s3_endpoint):
    bucket = f"media-{uuid.uuid4().hex[:12]}"
    env = {**settings_env, **CREDENTIALS, "STORAGE_BACKEND": "s3", "S3_BUCKET": bucket,
           "S3_ENDPOINT_URL": s3_endpoint, "S3_KEY_PREFIX": "platform"}
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=bucket)
    return env


def test_s3_storage_operations(s3_env):
    storage = make_storage(load_settings(s3_env), s3_env)
    assert isinstance(storage, S3Storage)
    key = content_key(b"png bytes", "png", "images")
    assert not storage.exists(key)
    storage.put(key, b"png bytes")
    storage.put(key, b"png bytes")
    assert storage.read(key) == b"png bytes"
    assert b"".join(storage.iter_chunks(key)) == b"png bytes"
    copy = storage.copy(key, "works/" + key)
    assert storage.read(copy) == b"png bytes"
    assert storage.local_path(key) is None
    assert storage.signed_url(key).startswith(f"/media/{key}?exp=")
    head = storage.client.head_object(Bucket=s3_env["S3_BUCKET"], Key=f"platform/{key}")
    assert head["ContentType"] == "image/png"
    storage.delete(key)
    assert not storage.exists(key) and storage.exists(copy)
    with pytest.raises(FileNotFoundError):
        storage.read(key)
    with pytest.raises(FileNotFoundError):
        storage.copy(key, "works/other/" + key)
    with pytest.raises(ValueError):
        storage.put("../escape.png", b"x")


def test_gallery_saves_and_serves_from_s3(s3_env, app, make_user, fake_gateway, monkeypatch):
    s3 = make_storage(load_settings(s3_env), s3_env)
    monkeypatch.setattr(app.extensions["gallery"].files, "storage", s3)
    labels = app.extensions["gallery"].labels  # no visible label: the download is the stored bytes
    monkeypatch.setattr(labels, "config", replace(labels.config, visible=False))
    alice = make_user()
    output_id = fake_gateway.add_output(alice.user_id, storage=s3)
    work = alice.post("/api/works/save", json={"outputId": output_id, "title": "s3"}).get_json()["data"]["work"]
    record = fake_gateway.outputs[output_id]

    assert s3.exists("works/" + record["imageKey"])
    download = alice.get(f"/api/works/{work['id']}/download")
    assert download.status_code == 200 and download.data == s3.read(record["imageKey"])
    assert alice.delete(f"/api/works/{work['id']}").status_code == 200
    assert not s3.exists("works/" + record["imageKey"])


def test_unreachable_object_store_fails_the_save_cleanly(s3_env, app, make_user, fake_gateway, monkeypatch):
    s3 = make_storage(load_settings(s3_env), s3_env)
    alice = make_user()
    output_id = fake_gateway.add_output(alice.user_id, storage=s3)
    broken = make_storage(load_settings(s3_env), {**s3_env, "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})
    monkeypatch.setattr(app.extensions["gallery"].files, "storage", broken)
    with pytest.raises(StorageError):
        broken.exists("images/aa/bb/" + "a" * 64 + ".png")

    response = alice.post("/api/works/save", json={"outputId": output_id, "title": "x"})

    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "STORAGE_UNAVAILABLE"
    with app.extensions["db"].read() as session:
        assert session.scalar(select(func.count()).select_from(Work).where(Work.output_id == output_id)) == 0
