"""A failing agent ends the worker at once; a stop that hangs is cut off."""

from __future__ import annotations

import subprocess
import sys
import time

from core.supervision import EXIT_FAILED, EXIT_STOP_TIMEOUT


def _run(code: str) -> tuple[int, float, str]:
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, check=False)
    return done.returncode, time.monotonic() - began, done.stderr


def test_a_failing_body_exits_the_process_non_zero_and_says_which() -> None:
    code, _, err = _run(
        "import asyncio, logging\n"
        "from core.supervision import fail_fast\n"
        "logging.basicConfig()\n"
        "async def body(stream):\n    raise RuntimeError('boom')\n"
        "asyncio.run(fail_fast('predictions_shards', body)(None))\n"
        "print('still alive')\n")
    assert code == EXIT_FAILED
    assert "predictions_shards failed" in err
    assert "RuntimeError: boom" in err


def test_cancellation_is_not_a_failure() -> None:
    code, _, _ = _run(
        "import asyncio\n"
        "from core.supervision import fail_fast\n"
        "async def body():\n    raise asyncio.CancelledError\n"
        "try:\n    asyncio.run(fail_fast('t', body)())\n"
        "except asyncio.CancelledError:\n    pass\n")
    assert code == 0


def test_a_stop_that_hangs_is_ended_after_the_deadline() -> None:
    code, took, err = _run(
        "import time\n"
        "from core.supervision import stop_deadline\n"
        "stop_deadline(0.5)\n"
        "time.sleep(20)\n")
    assert code == EXIT_STOP_TIMEOUT
    assert took < 10
    assert "the stop took over 0.5s" in err
