"""One Redis subscriber per gateway process, fanning live events out to that process's sockets.

Each open socket has a ``Mailbox``. The first mailbox of a user subscribes the process's one
pub/sub connection to ``events:<db>:user:<id>``; when the last one leaves, it unsubscribes. A
listener thread (a greenlet under gunicorn's gevent worker) owns that connection: between
reads it applies the subscription changes the sockets asked for (a socket that comes or goes
wakes it with a message on its control channel, so an idle listener costs nothing), and it drops
every message into the mailboxes of its user. It never writes to a socket, so a slow client delays only
itself; a mailbox that fills up marks its socket for closing.

The listener also reads the process's control channel ``ws:control:<process id>``, on which
any gateway process asks this one to close a socket (a user's oldest, beyond the per-user
limit). It runs while the process has sockets; if Redis fails, every socket is told
(``EVENTS_DOWN``) and the next socket starts a new listener.

The listener reads its connection itself (``Subscription``) rather than through redis-py's
``PubSub``: every live event passes here, and redis-py's read of one message (its connection
checks, retry wrapper and Python RESP parser) cost about as much as the rest of the relay.
"""
from __future__ import annotations

import itertools
import logging
import queue
import socket
import threading
import uuid
from typing import Any

import hiredis
import redis

from shared.events import connect, redis_db, user_channel

log = logging.getLogger(__name__)

# With nothing read for this long the listener sends a PING, so a connection the peer dropped
# without a word fails its next read (as redis-py's ``health_check_interval`` does). It is also
# all the listener waits: nothing else needs it awake, since sockets that come or go and the
# process shutting down wake it at once (a message on its control channel).
HEALTH_CHECK_SECONDS = 30.0
READ_SIZE = 65536
WAKE = ""  # what a socket publishes on the control channel to have its subscription applied
CONTROL_PREFIX = "ws:control:"

# What a mailbox holds: (kind, payload).
EVENT = "event"          # a user event, the JSON text as published
FRAME = "frame"          # a frame the client sent
CLIENT_GONE = "gone"     # the client closed the connection or stopped answering pings
EVICTED = "evicted"      # a newer socket of the same user took this one's place
EVENTS_DOWN = "down"     # the event bus (Redis) failed


class Mailbox:
    """What one socket's handler waits on. Bounded: a client that cannot keep up is closed
    (and resumes its jobs' events after reconnecting) rather than growing the process."""

    def __init__(self, capacity: int) -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=capacity)
        self.overflowed = False

    def put(self, kind: str, payload: Any = None) -> None:
        try:
            self._queue.put_nowait((kind, payload))
        except queue.Full:
            self.overflowed = True

    def get(self, timeout: float) -> tuple[str, Any] | None:
        try:
            return self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None


class Subscription:
    """The process's pub/sub connection: a connection of the client's pool settings (address,
    password, database, name, TLS) that only ever sends (UN)SUBSCRIBE and PING and whose
    replies are parsed by hiredis from what each socket read returns. Used by the listener alone."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._connection = self._pool.get_connection()  # connected, as redis-py's PubSub takes its own
        self._socket = self._connection._sock  # redis-py keeps no public read of the raw socket
        self._socket.settimeout(HEALTH_CHECK_SECONDS)
        encoding = self._pool.connection_kwargs.get("encoding", "utf-8")
        self._reader = hiredis.Reader(encoding=encoding, replyError=redis.ResponseError)

    def send(self, *command: str) -> None:
        self._connection.send_command(*command, check_health=False)

    def read(self) -> list[Any]:
        """The replies that have arrived, waiting at most ``HEALTH_CHECK_SECONDS`` for the first
        (and sending a PING when none came)."""
        replies = self._parsed()
        if replies:
            return replies
        try:
            data = self._socket.recv(READ_SIZE)
        except socket.timeout:
            self.send("PING")
            return []
        if not data:
            raise redis.ConnectionError("Redis closed the live-event subscription")
        self._reader.feed(data)
        return self._parsed()

    def _parsed(self) -> list[Any]:
        replies = []
        while (reply := self._reader.gets()) is not False:
            if isinstance(reply, redis.ResponseError):
                raise reply
            replies.append(reply)
        return replies

    def close(self) -> None:
        self._connection.disconnect()  # never reused half-read: the pool connects it afresh
        self._pool.release(self._connection)


class Fanout:
    def __init__(self, redis_url: str) -> None:
        self.process_id = uuid.uuid4().hex[:16]
        # Its own client, named, so an operator sees one "gateway-fanout-…" pub/sub connection per process.
        self.redis = connect(redis_url, decode_responses=True, health_check_interval=30,
                             client_name=f"gateway-fanout-{self.process_id}")
        self.db = redis_db(self.redis)
        self.control_channel = CONTROL_PREFIX + self.process_id
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self._mailboxes: dict[str, set[Mailbox]] = {}           # channel -> its sockets' mailboxes
        self._sockets: dict[str, Mailbox] = {}                   # socket id -> mailbox
        self._subscribed: dict[str, threading.Event] = {}       # channel -> set once subscribed
        self._changed: set[str] = set()                          # channels to (un)subscribe
        self._wake_sent = False                                  # a WAKE is on its way to the listener
        self._listener: threading.Thread | None = None
        self._closed = False

    @property
    def socket_count(self) -> int:
        return len(self._sockets)

    def attach(self, user_id: int, mailbox: Mailbox, timeout: float) -> str:
        """Register a socket's mailbox and return the socket's id once this process receives
        the user's events, so nothing published afterwards is missed. Raises
        ``redis.ConnectionError`` if the subscription is not confirmed within ``timeout``."""
        channel = user_channel(user_id, self.db)
        socket_id = f"{self.process_id}:{next(self._counter)}"
        with self._lock:
            self._sockets[socket_id] = mailbox
            self._mailboxes.setdefault(channel, set()).add(mailbox)
            subscribed = self._subscribed.setdefault(channel, threading.Event())
            self._changed.add(channel)
            if self._listener is None:
                self._listener = threading.Thread(target=self._listen, name="gateway-fanout", daemon=True)
                self._listener.start()
                wake = False  # a new listener applies the changes before it first waits
            else:
                wake = self._wake_needed()
        if wake:
            self._wake()
        if not subscribed.wait(timeout):
            self.detach(user_id, socket_id, mailbox)
            raise redis.ConnectionError("the live-event subscription was not confirmed in time")
        return socket_id

    def detach(self, user_id: int, socket_id: str, mailbox: Mailbox) -> None:
        channel = user_channel(user_id, self.db)
        with self._lock:
            self._sockets.pop(socket_id, None)
            mailboxes = self._mailboxes.get(channel)
            if mailboxes is None:
                return
            mailboxes.discard(mailbox)
            if not mailboxes:
                del self._mailboxes[channel]
                self._subscribed.pop(channel, None)
                self._changed.add(channel)
                wake = self._listener is not None and self._wake_needed()
            else:
                wake = False
        if wake:
            self._wake()

    def evict(self, socket_id: str) -> None:
        """Close a socket of any gateway process (its id names the process)."""
        with self._lock:
            mailbox = self._sockets.get(socket_id)
        if mailbox is not None:
            mailbox.put(EVICTED)
        else:
            process_id = socket_id.split(":", 1)[0]
            self.redis.publish(CONTROL_PREFIX + process_id, socket_id)

    def _wake_needed(self) -> bool:
        """Whether this change must wake the listener (one WAKE covers every change made before
        the listener takes them). Called with the lock held."""
        if self._wake_sent:
            return False
        self._wake_sent = True
        return True

    def _wake(self) -> None:
        try:
            self.redis.publish(self.control_channel, WAKE)
        except redis.RedisError:
            with self._lock:  # the next change sends its own WAKE (this one's socket, unconfirmed, is refused)
                self._wake_sent = False

    def close(self) -> None:
        """Stop listening (the app is shutting down) and wait for the listener to end."""
        with self._lock:
            self._closed = True
            listener = self._listener
        if listener is not None:
            self._wake()
        if listener is not None:
            listener.join(timeout=5)
        self.redis.close()

    def _listen(self) -> None:
        active: set[str] = set()     # channels subscribed on the connection
        pending: dict[str, int] = {}  # channel -> subscriptions sent and not yet confirmed
        subscription = None
        try:
            subscription = Subscription(self.redis)
            subscription.send("SUBSCRIBE", self.control_channel)
            while True:
                with self._lock:
                    if self._closed or (not self._mailboxes and not self._changed):
                        self._listener = None
                        return
                    changed, self._changed = self._changed, set()
                    self._wake_sent = False
                    wanted = {channel for channel in changed if channel in self._mailboxes}
                self._apply(subscription, changed, wanted, active, pending)
                for reply in subscription.read():
                    self._dispatch(reply, active, pending)
        except (redis.RedisError, OSError) as exc:
            log.warning("live events unavailable, closing this process's sockets: %s", exc)
            self._fail_all()
        finally:
            if subscription is not None:
                subscription.close()

    def _apply(self, subscription: Subscription, changed: set[str], wanted: set[str], active: set[str],
               pending: dict[str, int]) -> None:
        subscribe = [channel for channel in wanted if channel not in active]
        unsubscribe = [channel for channel in changed - wanted if channel in active]
        if subscribe:
            subscription.send("SUBSCRIBE", *subscribe)
            for channel in subscribe:
                pending[channel] = pending.get(channel, 0) + 1
            active.update(subscribe)
        if unsubscribe:
            subscription.send("UNSUBSCRIBE", *unsubscribe)
            active.difference_update(unsubscribe)
        for channel in wanted - set(subscribe):
            if not pending.get(channel):
                self._mark_subscribed(channel)  # still subscribed from before: ready at once

    def _dispatch(self, reply: Any, active: set[str], pending: dict[str, int]) -> None:
        """One reply of the subscription: ``[kind, channel, data or count]``, or a PING's answer."""
        if not isinstance(reply, list) or len(reply) != 3:
            return  # PONG
        kind, channel, data = reply
        if kind == "subscribe":
            pending[channel] = pending.get(channel, 1) - 1
            if channel in active and not pending[channel]:
                self._mark_subscribed(channel)
        elif kind != "message":
            return
        elif channel == self.control_channel:
            with self._lock:
                mailbox = self._sockets.get(data)
            if mailbox is not None:
                mailbox.put(EVICTED)
        else:
            with self._lock:
                mailboxes = list(self._mailboxes.get(channel, ()))
            for mailbox in mailboxes:
                mailbox.put(EVENT, data)

    def _mark_subscribed(self, channel: str) -> None:
        with self._lock:
            subscribed = self._subscribed.get(channel)
        if subscribed is not None:
            subscribed.set()

    def _fail_all(self) -> None:
        with self._lock:
            mailboxes = list(self._sockets.values())
            self._mailboxes.clear()
            self._sockets.clear()
            self._subscribed.clear()
            self._changed.clear()
            self._listener = None
        for mailbox in mailboxes:
            mailbox.put(EVENTS_DOWN)
