"""The pairing buffer: bounded by count and by time, and the offset a restart reads from."""

from __future__ import annotations

from agents.sources.pairing import Pairing


def test_a_request_and_its_response_pair_in_either_order() -> None:
    buffer: Pairing[str] = Pairing(max_pending=10, timeout_s=30)
    assert buffer.offer("a", "req-a", True, 5, now=0) == (None, [])
    assert buffer.offer("b", "resp-b", False, 6, now=0) == (None, [])
    other, evicted = buffer.offer("a", "resp-a", False, 7, now=1)
    assert other is not None
    assert other.item == "req-a"
    assert other.is_request
    assert not evicted
    other, _ = buffer.offer("b", "req-b", True, 8, now=1)
    assert other is not None
    assert other.item == "resp-b"
    assert buffer.low_offset() is None
    assert not buffer.waiting


def test_a_repeated_half_is_dropped_not_paired_with_itself() -> None:
    buffer: Pairing[str] = Pairing(max_pending=10, timeout_s=30)
    buffer.offer("a", "req-a", True, 1, now=0)
    assert buffer.offer("a", "req-a again", True, 2, now=0) == (None, [])
    assert buffer.waiting["a"].item == "req-a"


def test_the_oldest_halves_leave_past_max_pending() -> None:
    buffer: Pairing[str] = Pairing(max_pending=2, timeout_s=30)
    buffer.offer("a", "a", True, 1, now=0)
    buffer.offer("b", "b", True, 2, now=0)
    _, evicted = buffer.offer("c", "c", True, 3, now=0)
    assert [w.item for w in evicted] == ["a"]
    assert list(buffer.waiting) == ["b", "c"]
    assert buffer.low_offset() == 2


def test_halves_leave_after_the_timeout_and_the_low_offset_follows() -> None:
    buffer: Pairing[str] = Pairing(max_pending=10, timeout_s=30)
    buffer.offer("a", "a", True, 10, now=0)
    buffer.offer("b", "b", False, 11, now=20)
    assert buffer.expired(now=29.9) == []
    assert [w.item for w in buffer.expired(now=30)] == ["a"]
    assert buffer.low_offset() == 11
    assert [w.item for w in buffer.expired(now=50)] == ["b"]
    assert buffer.low_offset() is None
