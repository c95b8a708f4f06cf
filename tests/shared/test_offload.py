"""Long C calls leave the gevent hub (the gateway's event loop) free."""
from __future__ import annotations

import subprocess
import sys
import threading

from shared.config import PROJECT_ROOT
from shared.offload import run_blocking

UNDER_GEVENT = """
from gevent import monkey; monkey.patch_all()
from gevent.monkey import get_original
from shared.offload import run_blocking

native_id = get_original("threading", "get_native_id")
print(run_blocking(native_id) != native_id(), run_blocking(lambda a, b: a + b, 2, 3))
"""


def test_under_gevent_a_blocking_call_runs_in_a_real_thread():
    result = subprocess.run([sys.executable, "-c", UNDER_GEVENT], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "5"]


def test_without_gevent_a_blocking_call_runs_in_place():
    assert run_blocking(threading.get_native_id) == threading.get_native_id()
