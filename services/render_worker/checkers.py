"""The output check: every image a job produces is shown to a checker before it is stored or
shown (``CONTENT_IMAGE_CHECKER``).

- ``none`` (the default): nothing is checked.
- ``module:callable``: a local classifier, called as ``callable(image: bytes, context: dict)`` and
  answering a bool (flagged or not), a dict like the HTTP answer below, or a ``Verdict``.
- ``http(s)://…``: the operator's moderation service. The worker POSTs the PNG as the body
  (``Content-Type: image/png``, headers ``X-Job-Id``, ``X-Output-Index``, ``X-User-Id``, and
  ``Authorization: Bearer <CONTENT_IMAGE_CHECKER_TOKEN>`` when set) and expects 200 with
  ``{"flagged": bool, "categories": ["…"], "reason": "…"}``.

Either kind has ``CONTENT_IMAGE_CHECKER_TIMEOUT`` seconds; an error, a timeout or a malformed
answer raises ``CheckerUnavailable``, which the pipeline treats as ``CONTENT_IMAGE_CHECKER_FAIL``
says (open: deliver unchecked; closed: fail the job, refunded).

``demo_checker`` is a test checker (``services.render_worker.checkers:demo_checker``): it flags an
image whose job's prompt contains ``[flag-test]``, so the whole path can be tried without a model.
"""
from __future__ import annotations

import importlib
import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import requests

log = logging.getLogger(__name__)

DEMO_MARKER = "[flag-test]"


@dataclass(frozen=True)
class Verdict:
    flagged: bool
    categories: tuple[str, ...] = ()
    reason: str = ""


class CheckerUnavailable(Exception):
    """The checker gave no usable answer (error, timeout, malformed answer)."""


class ImageChecker(Protocol):
    name: str

    def check(self, image: bytes, context: dict[str, Any]) -> Verdict: ...


class NoChecker:
    name = "none"

    def check(self, image: bytes, context: dict[str, Any]) -> Verdict:
        return Verdict(False)


def _verdict(answer: Any) -> Verdict:
    if isinstance(answer, Verdict):
        return answer
    if isinstance(answer, bool):
        return Verdict(answer)
    if isinstance(answer, dict) and isinstance(answer.get("flagged"), bool):
        categories = answer.get("categories") or []
        if not isinstance(categories, list):
            raise CheckerUnavailable("categories is not a list")
        return Verdict(answer["flagged"], tuple(str(category)[:64] for category in categories[:20]),
                       str(answer.get("reason") or "")[:500])
    raise CheckerUnavailable(f"the checker answered {type(answer).__name__}, not a verdict")


class CallableChecker:
    """A local classifier, run on a thread of its own pool so a slow one is abandoned after the
    timeout (Python cannot stop it: it finishes in the background, its answer ignored)."""

    def __init__(self, name: str, function: Callable[[bytes, dict[str, Any]], Any], timeout: float) -> None:
        self.name = name
        self.function = function
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="image-check")

    def check(self, image: bytes, context: dict[str, Any]) -> Verdict:
        future = self._pool.submit(self.function, image, context)
        try:
            return _verdict(future.result(timeout=self.timeout))
        except FutureTimeout:
            raise CheckerUnavailable(f"{self.name} took longer than {self.timeout} s") from None
        except CheckerUnavailable:
            raise
        except Exception as exc:  # the classifier is the operator's code: any failure is "no answer"
            raise CheckerUnavailable(f"{self.name} failed: {exc.__class__.__name__}: {exc}") from exc


class HttpChecker:
    """The operator's moderation service over HTTP."""

    def __init__(self, url: str, timeout: float, token: str = "") -> None:
        self.name = url
        self.url = url
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def check(self, image: bytes, context: dict[str, Any]) -> Verdict:
        headers = {"Content-Type": "image/png", "X-Job-Id": str(context.get("jobId", "")),
                   "X-Output-Index": str(context.get("index", "")), "X-User-Id": str(context.get("userId", ""))}
        try:
            response = self.session.post(self.url, data=image, headers=headers, timeout=self.timeout)
        except requests.Timeout:
            raise CheckerUnavailable(f"{self.url} did not answer within {self.timeout} s") from None
        except requests.RequestException as exc:
            raise CheckerUnavailable(f"{self.url} unreachable: {exc.__class__.__name__}") from exc
        if response.status_code != 200:
            raise CheckerUnavailable(f"{self.url} answered {response.status_code}")
        try:
            return _verdict(response.json())
        except ValueError:
            raise CheckerUnavailable(f"{self.url} answered something that is not JSON") from None


def load_checker(spec: str, timeout: float, token: str = "") -> ImageChecker:
    """The checker ``CONTENT_IMAGE_CHECKER`` names (``ValueError`` when it names nothing usable)."""
    spec = spec.strip()
    if spec in ("", "none"):
        return NoChecker()
    if spec.startswith(("http://", "https://")):
        return HttpChecker(spec, timeout, token)
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"CONTENT_IMAGE_CHECKER must be none, module:callable or an http(s) URL, got {spec!r}")
    function = getattr(importlib.import_module(module_name), attribute, None)
    if not callable(function):
        raise ValueError(f"CONTENT_IMAGE_CHECKER names nothing callable: {spec!r}")
    return CallableChecker(spec, function, timeout)


def demo_checker(image: bytes, context: dict[str, Any]) -> dict[str, Any]:
    """A test checker: flags the images of a job whose prompt contains ``[flag-test]``."""
    flagged = DEMO_MARKER in str(context.get("prompt") or "")
    return {"flagged": flagged, "categories": ["test"] if flagged else [], "reason": "demo marker" if flagged else ""}
