"""The render domain's own settings (admission in the gateway, and the workers), read from
the environment.

| variable | default | meaning |
|---|---|---|
| ``COMFYUI_URL`` | http://127.0.0.1:8188 | the ComfyUI a worker drives (``--comfyui`` overrides it) |
| ``RENDER_QUEUE`` | render | prefix of the Celery queues, one per workflow (``render.text2img``, …) |
| ``RENDER_PROMPTS_IN_FLIGHT`` | 2 | jobs one worker keeps inside its ComfyUI at once (threads) |
| ``RENDER_USER_ACTIVE_LIMIT`` | 4 | a user's queued + running jobs; more → 429 QUEUE_LIMIT |
| ``RENDER_HEARTBEAT_SECONDS`` | 10 | worker heartbeat period; it is presumed dead after 3 missed beats |
| ``RENDER_RECONCILE_SECONDS`` | 15 | period of the reconciler (dead workers, overdue jobs, unsettled credits) and of the scheduler's sync of its line with the database |
| ``RENDER_LOST_MESSAGE_SECONDS`` | 30 | a job released to a worker and not claimed for this long is put back in line |
| ``RENDER_VISIBILITY_TIMEOUT`` | JOB_DEADLINE_SECONDS + 300 | seconds before Redis redelivers an unacknowledged message |
| ``RENDER_MAX_ATTEMPTS`` | 3 | runs of one job before a crash-looping job is failed and refunded |
| ``RENDER_COMFYUI_RETRY_SECONDS`` | 20 | how long an unreachable ComfyUI is retried (with backoff) before failing |
| ``RENDER_UPLOAD_MAX_BYTES`` | 10485760 | largest accepted upload |
| ``RENDER_PREVIEW_SIZE`` | 256 | longest side of forwarded previews (WebP) |
| ``RENDER_PREVIEW_INTERVAL_MS`` | 250 | at most one preview per job per interval |
| ``RENDER_PRICING_CACHE_SECONDS`` | 30 | how long the gateway trusts the price list read from credits |
| ``RENDER_OBJECT_INFO_SECONDS`` | 60 | how often a worker re-reads its ComfyUI's ``/object_info`` |
| ``RENDER_CREDITS_RETRY_SECONDS`` | 10 | how long a worker retries an unanswered capture or release before leaving it to the reconciler |
| ``RENDER_NO_WORKER_GRACE_SECONDS`` | 300 | queued jobs of a workflow no live worker has offered for this long fail (NO_WORKER) with a refund |
| ``RENDER_RESUBMIT_LOST`` | true | resubmit once a prompt ComfyUI lost (a restart) before failing the job |
| ``RENDER_FLUX_VAE`` | ae.safetensors | the VAE file Flux jobs use unless the user names one |
| ``RENDER_DRAIN_SECONDS`` | 60 | on SIGTERM a worker stops taking jobs and gives those in flight this long to finish; then it hands the rest back to the queue |
| ``RENDER_ADMISSION_DEADLINE_SECONDS`` | 20 | a generate request older than this (its client has likely given up) is refused, nothing held |
| ``CONTENT_IMAGE_CHECKER`` | none | checks each image before it is stored: none, ``module:callable`` or an http(s) URL (``services/render_worker/checkers.py``) |
| ``CONTENT_IMAGE_CHECKER_TIMEOUT`` | 5 | seconds one check may take |
| ``CONTENT_IMAGE_CHECKER_FAIL`` | open | a checker that fails or times out: ``open`` delivers unchecked, ``closed`` fails the job (refunded) |
| ``CONTENT_IMAGE_CHECKER_TOKEN`` | — | bearer token for an HTTP checker |
| ``RENDER_SHARE_WEIGHTS`` | (every role 1) | fair-share weights by role, e.g. ``admin=4,user=1``; an administrator may set one user's |
| ``RENDER_BATCH_MIN_SHARE`` | 0.2 | the batch lane's (service accounts') share of releases while the interactive lane waits too |
| ``RENDER_AFFINITY_WAIT_SECONDS`` | 5 | how long a job waits for a busy worker holding its checkpoint before any capable worker takes it; 0: no affinity |
| ``RENDER_SCHEDULE_SECONDS`` | 1 | the scheduler's longest pause between passes when nothing nudges it while jobs wait or are released (with neither, half its lease) |
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from shared.config import ConfigError, Settings, env_bool, env_str

from services.render.scheduler import parse_weights


@dataclass(frozen=True)
class RenderConfig:
    comfyui_url: str = "http://127.0.0.1:8188"
    queue_prefix: str = "render"
    prompts_in_flight: int = 2
    user_active_limit: int = 4
    heartbeat_seconds: float = 10.0
    reconcile_seconds: float = 15.0
    lost_message_seconds: float = 30.0
    visibility_timeout: int = 900
    max_attempts: int = 3
    comfyui_retry_seconds: float = 20.0
    upload_max_bytes: int = 10 * 1024 * 1024
    preview_size: int = 256
    preview_interval: float = 0.25
    pricing_cache_seconds: float = 30.0
    object_info_seconds: float = 60.0
    output_retention_days: int = 30
    credits_retry_seconds: float = 10.0
    no_worker_grace_seconds: float = 300.0
    resubmit_lost: bool = True
    flux_vae: str = "ae.safetensors"
    admission_deadline_seconds: float = 20.0
    drain_seconds: float = 60.0
    image_checker: str = "none"
    image_checker_timeout: float = 5.0
    image_checker_fail_closed: bool = False
    image_checker_token: str = ""
    share_weights: tuple[tuple[str, float], ...] = ()
    batch_min_share: float = 0.2
    affinity_wait_seconds: float = 5.0
    schedule_seconds: float = 1.0

    def role_weight(self, role: str | None) -> float:
        return dict(self.share_weights).get(role or "", 1.0)

    @property
    def alive_ttl(self) -> int:
        return max(2, int(self.heartbeat_seconds * 3))

    @property
    def parameter_defaults(self) -> dict[str, dict[str, str]]:
        """Defaults set by the operator, by workflow and parameter (they override the template's)."""
        return {"flux_text2img": {"vae": self.flux_vae}}


def _number(env: Mapping[str, str], name: str, default: float, *, integer: bool = False,
            zero: bool = False) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def load_config(settings: Settings, env: Mapping[str, str] | None = None) -> RenderConfig:
    env = os.environ if env is None else env
    return RenderConfig(
        comfyui_url=env_str(env, "COMFYUI_URL", "http://127.0.0.1:8188").rstrip("/"),
        queue_prefix=env_str(env, "RENDER_QUEUE", "render"),
        prompts_in_flight=int(_number(env, "RENDER_PROMPTS_IN_FLIGHT", 2, integer=True)),
        user_active_limit=int(_number(env, "RENDER_USER_ACTIVE_LIMIT", 4, integer=True)),
        heartbeat_seconds=_number(env, "RENDER_HEARTBEAT_SECONDS", 10.0),
        reconcile_seconds=_number(env, "RENDER_RECONCILE_SECONDS", 15.0),
        lost_message_seconds=_number(env, "RENDER_LOST_MESSAGE_SECONDS", 30.0),
        visibility_timeout=int(_number(env, "RENDER_VISIBILITY_TIMEOUT", settings.job_deadline_seconds + 300,
                                       integer=True)),
        max_attempts=int(_number(env, "RENDER_MAX_ATTEMPTS", 3, integer=True)),
        comfyui_retry_seconds=_number(env, "RENDER_COMFYUI_RETRY_SECONDS", 20.0),
        upload_max_bytes=int(_number(env, "RENDER_UPLOAD_MAX_BYTES", 10 * 1024 * 1024, integer=True)),
        preview_size=int(_number(env, "RENDER_PREVIEW_SIZE", 256, integer=True)),
        preview_interval=_number(env, "RENDER_PREVIEW_INTERVAL_MS", 250.0) / 1000,
        pricing_cache_seconds=_number(env, "RENDER_PRICING_CACHE_SECONDS", 30.0),
        object_info_seconds=_number(env, "RENDER_OBJECT_INFO_SECONDS", 60.0),
        output_retention_days=int(_number(env, "OUTPUT_RETENTION_DAYS", 30, integer=True)),
        credits_retry_seconds=_number(env, "RENDER_CREDITS_RETRY_SECONDS", 10.0),
        no_worker_grace_seconds=_number(env, "RENDER_NO_WORKER_GRACE_SECONDS", 300.0),
        resubmit_lost=env_bool(env, "RENDER_RESUBMIT_LOST", True),
        flux_vae=env_str(env, "RENDER_FLUX_VAE", "ae.safetensors"),
        admission_deadline_seconds=_number(env, "RENDER_ADMISSION_DEADLINE_SECONDS", 20.0),
        drain_seconds=_number(env, "RENDER_DRAIN_SECONDS", 60.0),
        image_checker=env_str(env, "CONTENT_IMAGE_CHECKER", "none").strip(),
        image_checker_timeout=_number(env, "CONTENT_IMAGE_CHECKER_TIMEOUT", 5.0),
        image_checker_fail_closed=_fail_mode(env),
        image_checker_token=env.get("CONTENT_IMAGE_CHECKER_TOKEN") or "",
        share_weights=_weights(env),
        batch_min_share=_share(env),
        affinity_wait_seconds=_number(env, "RENDER_AFFINITY_WAIT_SECONDS", 5.0, zero=True),
        schedule_seconds=_number(env, "RENDER_SCHEDULE_SECONDS", 1.0),
    )


def _fail_mode(env: Mapping[str, str]) -> bool:
    """True for ``closed``."""
    mode = env_str(env, "CONTENT_IMAGE_CHECKER_FAIL", "open").strip().lower()
    if mode not in ("open", "closed"):
        raise ConfigError(f"CONTENT_IMAGE_CHECKER_FAIL must be open or closed, got {mode!r}")
    return mode == "closed"


def _weights(env: Mapping[str, str]) -> tuple[tuple[str, float], ...]:
    raw = env.get("RENDER_SHARE_WEIGHTS", "")
    try:
        return tuple(sorted(parse_weights(raw).items()))
    except ValueError as exc:
        raise ConfigError(f"RENDER_SHARE_WEIGHTS must read like admin=4,user=1 (weights 0 to 1000), "
                          f"got {raw!r}") from exc


def _share(env: Mapping[str, str]) -> float:
    share = _number(env, "RENDER_BATCH_MIN_SHARE", 0.2)
    if share >= 1:
        raise ConfigError(f"RENDER_BATCH_MIN_SHARE must be below 1, got {share}")
    return share
