"""Output records the broker will never take are skipped, counted and logged, not raised."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from core import deadletter
from core.sink import OutputSink


class Topic:
    """Stands in for a Faust topic: the test resolves the message futures."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []
        self.futures: list[asyncio.Future[Any]] = []

    def get_topic_name(self) -> str:
        return "factory.metrics"

    def as_future_message(self, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
        self.futures.append(asyncio.get_running_loop().create_future())
        self.sent.append((key, value))
        return self.futures[-1]

    async def publish_message(self, future: asyncio.Future[Any], wait: bool) -> None:
        assert future is self.futures[-1]
        assert not wait


def test_too_large_before_sending_and_refused_after_are_counted_apart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> tuple[Topic, Counter[tuple[str, str]]]:
        failures: Counter[tuple[str, str]] = Counter()
        topic = Topic()
        sink = OutputSink(topic, 100, failures)
        assert await sink.send(b"x" * 101, key=b"k") is None
        ok, refused, flaky = (await sink.send(b"y" * 100), await sink.send(b"z"),
                              await sink.send(b"w"))
        assert ok is not None
        assert refused is not None
        assert flaky is not None
        ok.set_result("meta")
        refused.set_exception(MessageSizeTooLargeError())
        flaky.set_exception(KafkaTimeoutError())
        await asyncio.sleep(0)
        return topic, failures

    with caplog.at_level(logging.ERROR):
        topic, failures = asyncio.run(scenario())
    assert [v for _, v in topic.sent] == [b"y" * 100, b"z", b"w"]
    assert failures == {("factory.metrics", "too_large"): 2, ("factory.metrics", "error"): 1}
    assert "101 bytes over kafka.max_message_bytes" in caplog.text
    assert "never retrieved" not in caplog.text


def test_dead_letters_wait_for_delivery_but_not_for_a_permanent_refusal() -> None:
    async def scenario(exc: BaseException) -> None:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        bad: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result("meta")
        bad.set_exception(exc)
        await deadletter.delivered([done, bad])

    asyncio.run(scenario(MessageSizeTooLargeError()))
    with pytest.raises(KafkaTimeoutError):
        asyncio.run(scenario(KafkaTimeoutError()))
