"""File storage behind one small interface. Keys are derived from content, so the
same bytes are stored once and any number of records may reference them.

Two implementations: ``LocalStorage`` (files under ``DATA_DIR/media``, the default) and
``S3Storage`` (any S3-compatible object store through boto3), chosen by
``STORAGE_BACKEND`` (see ``load_storage_config``). Either way browsers reach files only
through the gateway's ``/media/<key>``: public files by their plain URL, anything else by
a signed URL that expires (``signed_url``), so an ``<img>`` tag works without a token
and a guessed key is worth nothing.
"""
from __future__ import annotations

import hashlib
import hmac
import mimetypes
import os
import re
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from shared.config import ConfigError, Settings

STREAM_CHUNK = 64 * 1024
DEFAULT_URL_TTL_SECONDS = 3600
# Keys are "<prefix>/<aa>/<bb>/<sha256>.<ext>", possibly under a further prefix ("works/images/...").
KEY_PATTERN = re.compile(r"^(?:[a-z]+/){1,3}[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}\.[a-z0-9]{2,5}$")
# Expiry times and the URL lifetime: ASCII digits, at most 12 of them.
EXPIRY = re.compile(r"[0-9]{1,12}")
# Images the output check withheld, kept for moderators: only ever served by a signed URL.
QUARANTINE_PREFIX = "quarantine/"


def content_key(data: bytes, extension: str, prefix: str) -> str:
    return digest_key(hashlib.sha256(data).hexdigest(), extension, prefix)


def digest_key(digest: str, extension: str, prefix: str) -> str:
    """The content key of data whose SHA-256 (hex) the caller has already computed."""
    return f"{prefix}/{digest[:2]}/{digest[2:4]}/{digest}.{extension}"


def is_valid_key(key: str) -> bool:
    """Whether ``key`` has the shape of a content key (no traversal, no stray characters)."""
    return bool(KEY_PATTERN.match(key))


class StorageError(RuntimeError):
    """The store could not complete an operation (unreachable, full, refused)."""


class SignatureExpired(ValueError):
    pass


class SignatureInvalid(ValueError):
    pass


class MediaSigner:
    """HMAC-SHA256 signatures for ``/media/<key>?exp=<unix seconds>&sig=<hex>``.

    The expiry is rounded up to a multiple of ``ttl`` (and lies between one and two
    ``ttl`` ahead), so a page reloaded within one period gets the same URL and the
    browser's cache keeps working.
    """

    def __init__(self, secret: bytes, ttl_seconds: int = DEFAULT_URL_TTL_SECONDS) -> None:
        self.secret = secret
        self.ttl = ttl_seconds

    def _digest(self, key: str, expires: int) -> str:
        return hmac.new(self.secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def sign(self, key: str, now: float | None = None, ttl: int | None = None) -> tuple[int, str]:
        ttl = ttl or self.ttl
        now = time.time() if now is None else now
        expires = (int(now) // ttl + 2) * ttl
        return expires, self._digest(key, expires)

    def verify(self, key: str, expires: str, signature: str, now: float | None = None) -> int:
        """Seconds the URL remains valid; SignatureInvalid or SignatureExpired otherwise."""
        if not EXPIRY.fullmatch(expires):  # ASCII digits only: str.isdigit() also accepts "²"
            raise SignatureInvalid("malformed expiry")
        if not hmac.compare_digest(self._digest(key, int(expires)).encode(), signature.encode()):
            raise SignatureInvalid("bad signature")
        remaining = int(expires) - int(time.time() if now is None else now)
        if remaining <= 0:
            raise SignatureExpired("expired")
        return remaining


class Storage(ABC):
    """What every store offers; URLs always point at the gateway's ``url_prefix``."""

    url_prefix: str = "/media"
    signer: MediaSigner | None = None

    @abstractmethod
    def put(self, key: str, data: bytes) -> str: ...

    @abstractmethod
    def read(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def copy(self, source_key: str, dest_key: str) -> str:
        """Make ``dest_key`` hold the bytes of ``source_key`` (a no-op if it already exists)."""

    @abstractmethod
    def iter_chunks(self, key: str) -> Iterator[bytes]:
        """The bytes of ``key`` in chunks, for streaming a response."""

    def local_path(self, key: str) -> Path | None:
        """A filesystem path for ``key`` when the store is local (lets a server use sendfile)."""
        return None

    def url(self, key: str) -> str:
        return f"{self.url_prefix}/{key}"

    def signed_url(self, key: str, now: float | None = None, ttl: int | None = None) -> str:
        """A URL of the private file ``key`` valid between ``ttl`` (default ``MEDIA_URL_TTL_SECONDS``)
        and twice that."""
        if self.signer is None:
            raise RuntimeError("this storage has no signing secret (build it with make_storage)")
        expires, signature = self.signer.sign(key, now, ttl)
        return f"{self.url_prefix}/{key}?exp={expires}&sig={signature}"


class LocalStorage(Storage):
    """Files under one folder, served by the gateway under ``url_prefix``."""

    def __init__(self, root: Path, url_prefix: str = "/media", signer: MediaSigner | None = None) -> None:
        self.root = Path(root)
        self.url_prefix = url_prefix.rstrip("/")
        self.signer = signer

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return path

    def put(self, key: str, data: bytes) -> str:
        """Write atomically (temp file + rename); writing existing content again is a no-op."""
        path = self._path(key)
        if path.exists():
            return key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def read(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def copy(self, source_key: str, dest_key: str) -> str:
        """A hard link where the filesystem allows (no second copy on disk), else a copy."""
        source, dest = self._path(source_key), self._path(dest_key)
        if dest.exists():
            return dest_key
        if not source.exists():
            raise FileNotFoundError(source_key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
        try:
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return dest_key

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        with open(self._path(key), "rb") as handle:
            while chunk := handle.read(STREAM_CHUNK):
                yield chunk

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


class S3Storage(Storage):
    """Objects in one bucket of an S3-compatible store (AWS S3, MinIO, ...).

    Errors of the store surface as ``StorageError`` (a missing object as ``FileNotFoundError``).
    """

    def __init__(self, client: Any, bucket: str, key_prefix: str = "", url_prefix: str = "/media",
                 signer: MediaSigner | None = None) -> None:
        self.client = client
        self.bucket = bucket
        self.key_prefix = key_prefix.strip("/") + "/" if key_prefix.strip("/") else ""
        self.url_prefix = url_prefix.rstrip("/")
        self.signer = signer

    def _object(self, key: str) -> str:
        if ".." in key.split("/") or key.startswith("/"):
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return self.key_prefix + key

    def _call(self, operation: Callable[..., Any], key: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return operation(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(key) from exc
            raise StorageError(f"object store refused {operation.__name__} of {key}: {code}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"object store unreachable for {key}: {exc}") from exc

    def put(self, key: str, data: bytes) -> str:
        if self.exists(key):
            return key
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        self._call(self.client.put_object, key, Key=self._object(key), Body=data, ContentType=content_type)
        return key

    def read(self, key: str) -> bytes:
        return self._call(self.client.get_object, key, Key=self._object(key))["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self._call(self.client.head_object, key, Key=self._object(key))
        except FileNotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        self._call(self.client.delete_object, key, Key=self._object(key))

    def copy(self, source_key: str, dest_key: str) -> str:
        if self.exists(dest_key):
            return dest_key
        source = {"Bucket": self.bucket, "Key": self._object(source_key)}
        self._call(self.client.copy_object, source_key, Key=self._object(dest_key), CopySource=source)
        return dest_key

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        body = self._call(self.client.get_object, key, Key=self._object(key))["Body"]
        try:
            yield from body.iter_chunks(STREAM_CHUNK)
        finally:
            body.close()


@dataclass(frozen=True)
class StorageConfig:
    backend: str = "local"
    s3_bucket: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_key_prefix: str = ""
    signing_secret: str = ""
    url_ttl_seconds: int = DEFAULT_URL_TTL_SECONDS


def load_storage_config(settings: Settings, env: Mapping[str, str] | None = None) -> StorageConfig:
    """``STORAGE_BACKEND`` (local|s3), ``S3_BUCKET``, ``S3_ENDPOINT_URL``, ``S3_REGION``,
    ``S3_ACCESS_KEY_ID``, ``S3_SECRET_ACCESS_KEY``, ``S3_KEY_PREFIX``, ``MEDIA_SIGNING_SECRET``
    (default: derived from the service token), ``MEDIA_URL_TTL_SECONDS`` (3600)."""
    env = os.environ if env is None else env
    backend = (env.get("STORAGE_BACKEND") or "local").strip().lower()
    if backend not in ("local", "s3"):
        raise ConfigError(f"STORAGE_BACKEND must be local or s3, got {backend!r}")
    bucket = env.get("S3_BUCKET") or ""
    if backend == "s3" and not bucket:
        raise ConfigError("S3_BUCKET must be set when STORAGE_BACKEND=s3")
    raw_ttl = env.get("MEDIA_URL_TTL_SECONDS") or str(DEFAULT_URL_TTL_SECONDS)
    if not EXPIRY.fullmatch(raw_ttl) or int(raw_ttl) < 60:
        raise ConfigError(f"MEDIA_URL_TTL_SECONDS must be an integer of at least 60, got {raw_ttl!r}")
    secret = env.get("MEDIA_SIGNING_SECRET") or ""
    if not secret:
        # Every process already shares the service token; a derived key keeps the token itself off URLs.
        secret = hmac.new(settings.service_token.encode(), b"media-url-signing-v1", hashlib.sha256).hexdigest()
    return StorageConfig(
        backend=backend, s3_bucket=bucket, s3_endpoint_url=env.get("S3_ENDPOINT_URL") or None,
        s3_region=env.get("S3_REGION") or "us-east-1", s3_access_key_id=env.get("S3_ACCESS_KEY_ID") or None,
        s3_secret_access_key=env.get("S3_SECRET_ACCESS_KEY") or None, s3_key_prefix=env.get("S3_KEY_PREFIX") or "",
        signing_secret=secret, url_ttl_seconds=int(raw_ttl))


def make_storage(settings: Settings, env: Mapping[str, str] | None = None) -> Storage:
    """The configured store, able to sign URLs."""
    config = load_storage_config(settings, env)
    signer = MediaSigner(config.signing_secret.encode(), config.url_ttl_seconds)
    if config.backend == "local":
        return LocalStorage(settings.media_dir, signer=signer)
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=config.s3_endpoint_url, region_name=config.s3_region,
        aws_access_key_id=config.s3_access_key_id, aws_secret_access_key=config.s3_secret_access_key,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=3, read_timeout=10,
                      max_pool_connections=32))
    return S3Storage(client, config.s3_bucket, config.s3_key_prefix, signer=signer)


def remove_unreferenced(storage: Storage, keys: Iterable[str],
                        referenced: Callable[[list[str]], set[str]]) -> list[str]:
    """Delete those of ``keys`` that ``referenced`` (asked once, after the owning rows were
    removed and committed) no longer reports as in use; returns the deleted keys."""
    candidates = sorted(set(keys))
    if not candidates:
        return []
    still_used = referenced(candidates)
    deleted = []
    for key in candidates:
        if key not in still_used:
            storage.delete(key)
            deleted.append(key)
    return deleted
