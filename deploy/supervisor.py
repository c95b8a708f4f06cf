"""honcho with a restart policy: the supervisor of ``make run``.

honcho runs each process in its own process group and prefixes its output with its name,
which is what a terminal (and ``DATA_DIR/logs/platform.log``) should show; but like
foreman it stops everything as soon as one process exits. ``Supervisor`` keeps honcho's
processes, printer and signal handling and changes only that rule: a child that exits
while the platform runs is started again after a back-off (1 s, doubling up to 30 s while
it keeps dying within a minute of its start), and each restart is logged. Ctrl-C or
SIGTERM stops every child as before, and nothing is restarted after that; the children named
``stop_last`` (the embedded Redis the others read) are stopped once the others have gone, so
a stopping platform does not log its consumers losing Redis.

(supervisord was the other candidate; it writes each child's output to a file of its own
without a name prefix and gives a child up after ``startretries`` quick exits, which is not
what a platform that heals itself wants.)
"""
from __future__ import annotations

import multiprocessing
import queue
import signal
import time
from typing import Collection

from honcho.manager import KILL_WAIT, SIGNALS, Manager
from honcho.printer import Message

FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 30.0
# A child that ran this long before it exited is restarted after the first delay again.
STABLE_SECONDS = 60.0


class Supervisor(Manager):
    def __init__(self, printer=None, stop_last: Collection[str] = ()) -> None:
        super().__init__(printer)
        self._held_back = frozenset(stop_last)
        self._spawned_at: dict[str, float] = {}
        self._quick_exits: dict[str, int] = {}
        self._restart_at: dict[str, float] = {}
        self._killed = False

    def loop(self) -> None:
        """Start every process, relay its output and restart whatever exits, until a signal."""
        def terminate(signum, _frame) -> None:
            self._system_print("%s received\n" % SIGNALS[signum]["name"])
            self.returncode = SIGNALS[signum]["rc"]
            self.terminate()

        signal.signal(signal.SIGTERM, terminate)
        signal.signal(signal.SIGINT, terminate)
        for name in self._processes:
            self._spawn(name)
        kill_at = None
        while not (self._terminating and self._all_stopped()):
            try:
                self._receive(self.events.get(timeout=0.1))
            except queue.Empty:
                pass
            now = time.monotonic()
            if self._terminating:
                if self._held_back and all("returncode" in process for name, process in self._processes.items()
                                           if name not in self._held_back):
                    self._held_back, self._killed, kill_at = frozenset(), False, None
                    self._killall()  # the others have gone: now what they needed
                kill_at = kill_at or now + KILL_WAIT
                if now > kill_at and not self._killed:
                    self._killed = True
                    self.kill()
                continue
            for name, due in list(self._restart_at.items()):
                if now >= due:
                    del self._restart_at[name]
                    self._spawn(name)

    def _spawn(self, name: str) -> None:
        process = self._processes[name]
        process.pop("returncode", None)
        process["pid"] = None
        process["process"] = multiprocessing.Process(name=name, target=process["obj"].run, args=(self.events, True))
        process["process"].start()
        self._spawned_at[name] = time.monotonic()

    def _receive(self, message: Message) -> None:
        process = self._processes[message.name]
        if message.type == "line":
            self._printer.write(message)
        elif message.type == "start":
            process["pid"] = message.data["pid"]
            self._system_print("%s started (pid=%s)\n" % (message.name, message.data["pid"]))
            if self._terminating:  # spawned just before the signal: it goes too
                self._procmgr.terminate(process["pid"])
        elif message.type == "stop":
            process["returncode"] = message.data["returncode"]
            self._system_print("%s stopped (rc=%s)\n" % (message.name, message.data["returncode"]))
            process["process"].join(timeout=5)
            if not self._terminating:
                self._schedule_restart(message.name)

    def _schedule_restart(self, name: str) -> None:
        ran = time.monotonic() - self._spawned_at[name]
        streak = self._quick_exits.get(name, 0) + 1 if ran < STABLE_SECONDS else 0
        self._quick_exits[name] = streak
        delay = min(FIRST_DELAY_SECONDS * 2 ** max(streak - 1, 0), MAX_DELAY_SECONDS)
        # What the dead leader left in its process group must not outlive it.
        self._procmgr.kill(self._processes[name]["pid"])
        self._restart_at[name] = time.monotonic() + delay
        self._system_print("%s exited after %.1f s; restarting it in %.0f s\n" % (name, ran, delay))

    def _killall(self, force: bool = False) -> None:
        """honcho's, for the children that have a pid yet (one being restarted may not)."""
        for name, process in self._processes.items():
            if "returncode" in process or process.get("pid") is None or name in self._held_back:
                continue
            self._system_print("sending %s to %s (pid %s)\n" % ("SIGKILL" if force else "SIGTERM", name,
                                                                 process["pid"]))
            if force:
                self._procmgr.kill(process["pid"])
            else:
                self._procmgr.terminate(process["pid"])
