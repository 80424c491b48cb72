"""Pure metric math: one mergeable aggregator per metric family, no Kafka anywhere.

Every aggregator has `update(...)` over numpy arrays of one batch, `merge(other)`, a compact
JSON-able `to_state()`/`from_state()` for the changelog, and `value()` returning the metric
fields (None for "no data", never a fake zero).
"""
