"""``qwen-gateway serve --workers N``: N gateway processes accepting on one listening socket, and their supervisor.

The supervisor (the process started by the user) binds the listening socket once, then starts N workers, each a
plain ``qwen-gateway serve`` run with the same arguments that inherits the socket (``--worker-fd``) instead of
binding its own. Every worker runs the single-process code path unchanged: its own event loop, its own
``open_services`` (database pool, object-store client, outbox drainer, and in keyless mode its own in-process
DashScope simulator), under Hypercorn on the inherited socket (``fd://``).

Why one inherited socket rather than Hypercorn's own workers or ``SO_REUSEPORT``:

- Hypercorn's multi-worker runner loads the app by import path in each worker and builds services in the ASGI
  lifespan; ours are built around the app (``open_services``) with settings decided once by the CLI, so every
  worker would need a second, different start-up path.
- With ``SO_REUSEPORT`` every worker has its own accept queue: connections the kernel already queued on a worker
  that stops (restart, crash, the graceful drain to come) are reset. On one shared socket a worker that stops
  accepting leaves the queue to the others, and the supervisor keeps the socket open while it restarts a worker,
  so no connection is refused in between. (The kernel spreads accepts over the workers that are waiting.)

Supervision: SIGTERM or SIGINT to the supervisor is passed to every worker as SIGTERM; the supervisor waits up to
``stop_timeout`` seconds for them, kills what is left, and exits 0 when every worker stopped cleanly (1
otherwise). A worker that exits on its own (a crash) is reported on stderr with its exit status and restarted
after ``restart_delay``; when workers crash ``crash_limit`` times within ``crash_window`` seconds the supervisor
stops the others and exits 1 (a crash loop is a configuration or code problem a restart will not fix: the
orchestrator should see it).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Supervisor", "worker_argv"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the worker gets SIGTERM if the supervisor dies without stopping it (e.g. SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def worker_argv(argv: Sequence[str], fd: int, worker_id: int) -> list[str]:
    """The command line of worker ``worker_id``: the supervisor's own ``serve`` arguments plus the socket."""
    return [
        sys.executable,
        "-m",
        "qwen_gateway",
        *argv,
        "--worker-fd",
        str(fd),
        "--worker-id",
        str(worker_id),
    ]


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


@dataclass
class Supervisor:
    """Start ``workers`` copies of ``qwen-gateway serve <argv>`` on ``sock`` and look after them (see module)."""

    sock: socket.socket
    argv: Sequence[str]
    workers: int
    stop_timeout: float = 30.0
    restart_delay: float = 1.0
    crash_limit: int = 5
    crash_window: float = 60.0
    poll_interval: float = 0.2
    #: called with the pid of each worker that ended (multiprocess metrics forget its live gauges)
    on_worker_exit: Callable[[int], None] | None = None
    _procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    _crashes: deque[float] = field(default_factory=deque)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _say(self, text: str) -> None:
        print(f"qwen-gateway supervisor[{os.getpid()}]: {text}", file=sys.stderr, flush=True)

    def _spawn(self, worker_id: int) -> None:
        fd = self.sock.fileno()
        proc = subprocess.Popen(
            worker_argv(self.argv, fd, worker_id),
            pass_fds=(fd,),
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self._procs[worker_id] = proc
        self._say(f"worker {worker_id} started (pid {proc.pid})")

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or a crash loop); return the process exit code."""
        previous = {
            sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            return self._supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _supervise(self) -> int:
        for worker_id in range(self.workers):
            self._spawn(worker_id)
        code = 0
        restart_at: dict[int, float] = {}
        while not self._stop.wait(self.poll_interval):
            now = time.monotonic()
            for worker_id, proc in list(self._procs.items()):
                if worker_id in restart_at or proc.poll() is None:
                    continue
                self._say(
                    f"worker {worker_id} (pid {proc.pid}) ended: {_describe(proc.returncode)}"
                )
                self._exited(proc.pid)
                self._crashes.append(now)
                while self._crashes and now - self._crashes[0] > self.crash_window:
                    self._crashes.popleft()
                if len(self._crashes) >= self.crash_limit:
                    self._say(
                        f"{len(self._crashes)} worker crashes within {self.crash_window:.0f} s: stopping"
                    )
                    code = 1
                    self._stop.set()
                    break
                restart_at[worker_id] = now + self.restart_delay
            for worker_id, when in list(restart_at.items()):
                if not self._stop.is_set() and now >= when:
                    del restart_at[worker_id]
                    self._spawn(worker_id)
        return max(code, self._stop_all())

    def _stop_all(self) -> int:
        """SIGTERM every live worker, wait for them (then SIGKILL); 0 when each stopped with status 0."""
        live = {i: p for i, p in self._procs.items() if p.poll() is None}
        for proc in live.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        code = 0
        for worker_id, proc in live.items():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say(f"worker {worker_id} (pid {proc.pid}) did not stop: killing it")
                proc.kill()
                proc.wait()
                code = 1
                continue
            if proc.returncode != 0:
                self._say(
                    f"worker {worker_id} (pid {proc.pid}) stopped: {_describe(proc.returncode)}"
                )
                code = 1
        for proc in live.values():
            self._exited(proc.pid)
        self.sock.close()
        if code == 0:
            self._say(f"{len(live)} workers stopped")
        return code

    def _exited(self, pid: int) -> None:
        if self.on_worker_exit is not None:
            try:
                self.on_worker_exit(pid)
            except Exception as exc:  # a bookkeeping failure must not stop the supervision
                self._say(f"after worker pid {pid} ended: {exc!r}")
