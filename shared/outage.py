"""How a background loop that retries logs a dependency being away.

A restart of Redis, the database or the broker is routine for a loop that tries again: the first
failure of an outage is a warning with its reason (no traceback), the retries say nothing more, and
an outage that outlasts ``ERROR_AFTER_SECONDS`` is an error (with the traceback, once per that
period), which an operator's alert must hear of. The outage's end is logged. A failure that is not
a lost connection (a bug, bad data, a full disk) is an error at once, every time, as before.
"""
from __future__ import annotations

import errno
import logging
import socket
import time
from typing import Callable

import kombu.exceptions
import redis
from sqlalchemy.exc import OperationalError

ERROR_AFTER_SECONDS = 60.0

# A connection that broke or could not be made: a socket's (refused, reset, timed out, a name not
# resolved), Redis's, RabbitMQ's (py-amqp's, as kombu names it), kombu's, or the database driver's
# operational error (server gone, refused).
CONNECTION_ERRORS = (ConnectionError, TimeoutError, socket.gaierror, redis.ConnectionError, redis.TimeoutError,
                     kombu.exceptions.ConnectionError, kombu.exceptions.OperationalError, OperationalError)
_NETWORK_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.ENOTCONN})


def lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` is a connection lost or refused. Another ``OSError`` counts when it is the
    network's (no route to the host) or has no errno (a driver's "server unexpectedly closed the
    connection"); a file's or a device's (a full disk, a missing path) is not an outage to wait out."""
    if isinstance(exc, CONNECTION_ERRORS):
        return True
    return isinstance(exc, OSError) and (exc.errno is None or exc.errno in _NETWORK_ERRNOS)


class Outage:
    """One loop's view of its dependencies: call ``failed`` in the ``except`` of a failed pass and
    ``passed`` after one that worked. ``what`` names the pass in the log ("scheduler pass")."""

    def __init__(self, log: logging.Logger, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.what = what
        self.clock = clock
        self.since: float | None = None  # when the outage began (``clock``)
        self.reported = 0.0  # when it was last logged

    def failed(self, exc: BaseException, retry: str = "retrying") -> None:
        if not lost_connection(exc):
            self.log.error("%s failed; %s", self.what, retry, exc_info=exc)
            return
        now = self.clock()
        if self.since is None:
            self.since = self.reported = now
            self.log.warning("%s failed (%s: %s); %s", self.what, type(exc).__name__, exc, retry)
        elif now - self.reported >= ERROR_AFTER_SECONDS:
            self.reported = now
            self.log.error("%s has failed for %.0f s; %s", self.what, now - self.since, retry, exc_info=exc)

    def passed(self) -> None:
        if self.since is not None:
            self.log.info("%s works again after %.0f s", self.what, self.clock() - self.since)
            self.since = None
