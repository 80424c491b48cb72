"""What the worker does when part of it fails: it exits at once, non-zero.

Faust logs a crashed agent and carries on without it: the worker stays half alive (its HTTP
answers, its partitions stay assigned but unread, no window closes) and a later SIGTERM hangs
waiting for the dead agent's events. A process that exits instead is restarted by whatever
runs it (systemd, Kubernetes, `factory-pulse demo`), and loses nothing: tables are written
changelog first and offsets committed only for applied messages, so the restarted worker
replays exactly what was not applied. With static membership it takes its partitions back
without a rebalance.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

EXIT_FAILED = 70  # EX_SOFTWARE: a bug or an unexpected failure; restart the worker
EXIT_STOP_TIMEOUT = 75  # EX_TEMPFAIL: a stop that did not finish within STOP_WITHIN_S
STOP_WITHIN_S = 15.0


def exit_now(code: int, why: str) -> None:
    """Log `why` and end the process without running more of the event loop."""
    log.critical("%s; exiting with status %d", why, code)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


def fail_fast(name: str, body: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap an agent, task or timer body: any failure but cancellation ends the process.

    The wrapper keeps `body`'s signature (Faust passes the app to a task or timer that
    takes an argument, the stream to an agent)."""
    @functools.wraps(body)
    async def supervised(*args: Any) -> Any:
        try:
            return await body(*args)
        except asyncio.CancelledError:
            raise  # a rebalance or a stop
        except Exception:
            log.exception("%s failed", name)
            exit_now(EXIT_FAILED, f"{name} failed")

    return supervised


def stop_deadline(seconds: float = STOP_WITHIN_S) -> None:
    """From a stop signal on, give the worker `seconds` to finish stopping, then end it.

    A stop commits what was applied and leaves the group; whatever it has not done by then
    is redone by the next worker from the changelog and the committed offsets.
    """
    timer = threading.Timer(seconds, exit_now,
                            (EXIT_STOP_TIMEOUT, f"the stop took over {seconds:g}s"))
    timer.daemon = True
    timer.start()
