"""The prediction events of one inference, from its request and response bodies (V1 or V2),
as every adapter builds them."""

from __future__ import annotations

from typing import Any

from agents.sources.inference import Tensors, answers, failed, features
from agents.sources.mapping import Half, NotMapped
from core.settings import Source


def tensors(source: Source) -> Tensors:
    return Tensors(source.input, source.score_output, source.class_output)


def build(request: Half | None, response: Half, model: str, version: str,
          source: Source) -> list[dict[str, Any]]:
    """One prediction per response row: `event_id` the inference's id (`<id>.<row>` for
    several rows), `ts` the response's time, `latency_ms` the pair's difference,
    `predicted` and `score` from the response, `features` the configured names from the
    request; a model server's error answer is one prediction with `status` error."""
    base: dict[str, Any] = {"ts": response.ts, "model": model, "version": version}
    if request is not None:
        base["latency_ms"] = max(0.0, (response.ts - request.ts) * 1000)
    if failed(response.body):
        return [{"event_id": response.id, **base, "status": "error"}]
    rows = answers(response.body, tensors(source))
    inputs = None
    if request is not None and source.features:
        inputs = features(request.body, source.features, tensors(source))
        if len(inputs) != len(rows):
            raise NotMapped(f"the request has {len(inputs)} rows, the response {len(rows)}",
                            "data")
    out = []
    for index, answer in enumerate(rows):
        prediction = {"event_id": response.id if len(rows) == 1 else f"{response.id}.{index}",
                      **base}
        if answer.predicted is not None:
            prediction["predicted"] = answer.predicted
        if answer.score is not None:
            prediction["score"] = answer.score
        if inputs is not None and inputs[index]:
            prediction["features"] = inputs[index]
        out.append(prediction)
    return out
