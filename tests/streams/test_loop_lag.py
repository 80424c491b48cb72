from __future__ import annotations

import asyncio
import time

import pytest

from streams.loop_lag import LoopLag


def test_a_blocking_call_shows_as_lag_and_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    monitor = LoopLag(interval_s=0.05, warn_s=0.3)

    async def scenario() -> None:
        task = asyncio.create_task(monitor.run())
        await asyncio.sleep(0.3)
        quiet = monitor.max_s
        time.sleep(0.5)  # noqa: ASYNC251 (the injected blocking call is the point)
        await asyncio.sleep(0.2)
        task.cancel()
        assert quiet < 0.1

    asyncio.run(scenario())
    assert monitor.max_s >= 0.4
    assert monitor.stalls == 1
    assert "blocked for" in caplog.text
