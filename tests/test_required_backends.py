"""CI makes MariaDB and RabbitMQ mandatory (``.ci/run``): with ``TEST_REQUIRE_MARIADB=1`` or
``TEST_REQUIRE_RABBITMQ=1`` a backend that does not answer stops the run before any test,
instead of quietly dropping the half of the tests that needs it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.config import PROJECT_ROOT
from shared.embedded import free_port

COLLECT = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
           "tests/test_settings_documented.py"]


def _collect(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(COLLECT, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TEST_REQUIRE_MARIADB": "0", "TEST_REQUIRE_RABBITMQ": "0", **env})


@pytest.mark.parametrize("required, url_setting, url, message", [
    ("TEST_REQUIRE_MARIADB", "TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:{port}/", "no MariaDB answers"),
    ("TEST_REQUIRE_RABBITMQ", "TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:{port}//", "no RabbitMQ answers"),
])
def test_a_required_backend_that_does_not_answer_fails_the_run(required, url_setting, url, message):
    nobody = url.format(port=free_port())
    run = _collect(**{required: "1", url_setting: nobody})
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert message in run.stderr and nobody in run.stderr
