"""The client library's message values, without a broker."""

from __future__ import annotations

import orjson

from core.settings import Settings
from schemas.codec import VALIDATORS, decode_message, message_events
from schemas.columnar import Columns
from streams.client import FactoryClient

EVENTS = [{"event_id": f"r-{i}", "ts": 1.7e9 + i, "model": "churn", "version": "v3",
           "score": i / 10, **({"features": {"age": 30 + i}} if i % 2 else {})}
          for i in range(5)]


def test_a_batch_goes_in_columns_by_default_and_means_its_events() -> None:
    value = FactoryClient(Settings()).value(EVENTS)
    assert orjson.loads(value)["_columns"]["model"] == "churn"
    decoded, rejected = decode_message(value, VALIDATORS["predictions"])
    assert rejected == []
    assert isinstance(decoded, Columns)
    assert decoded.rows() == EVENTS
    assert message_events(value) == EVENTS


def test_arrays_on_request_and_a_lone_event_as_an_object() -> None:
    arrays = FactoryClient(Settings(), columnar=False)
    assert orjson.loads(arrays.value(EVENTS)) == EVENTS
    for client in (arrays, FactoryClient(Settings())):
        assert orjson.loads(client.value(EVENTS[:1])) == EVENTS[0]
