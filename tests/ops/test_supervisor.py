"""The supervisor of ``serve --workers N`` on its own: a crash loop ends it with status 1, nothing left running."""

from __future__ import annotations

import signal

import pytest

from qwen_gateway.server import listen
from qwen_gateway.workers import Supervisor


def test_workers_that_keep_dying_stop_the_supervisor_with_status_1(
    capfd: pytest.CaptureFixture[str],
) -> None:
    sock = listen("127.0.0.1", 0)
    sock.set_inheritable(True)
    before = signal.getsignal(signal.SIGTERM)
    # Every worker exits at once (an unknown command: status 2), as a worker that cannot start would.
    supervisor = Supervisor(
        sock, ["no-such-command"], 2, restart_delay=0.01, crash_limit=4, crash_window=600
    )
    assert supervisor.run() == 1
    assert sock.fileno() == -1  # the listening socket is closed with the supervisor
    assert signal.getsignal(signal.SIGTERM) is before  # its signal handlers are gone too
    err = capfd.readouterr().err
    assert "ended: exit status 2" in err
    assert "4 worker crashes within 600 s: stopping" in err
    assert all(p.poll() is not None for p in supervisor._procs.values())
