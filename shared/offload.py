"""Long calls into C code, kept off the gevent hub.

The gateway runs under gunicorn's gevent worker: a greenlet that stays inside C code for long
(Pillow decoding a 40-megapixel upload) stalls every other greenlet of its process, sockets
and requests alike. ``run_blocking`` runs such a call in gevent's pool of real threads when
the process is monkey-patched (Pillow releases the GIL while it decodes), and directly
everywhere else (threads of other servers, tests, workers).
"""
from __future__ import annotations

from typing import Callable, TypeVar

import gevent
from gevent import monkey

T = TypeVar("T")


def run_blocking(func: Callable[..., T], *args: object) -> T:
    if monkey.is_module_patched("threading"):
        return gevent.get_hub().threadpool.apply(func, args)
    return func(*args)
