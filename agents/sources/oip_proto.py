"""Open Inference Protocol messages in protobuf (`ModelInferRequest`, `ModelInferResponse` of
`inference.GRPCInferenceService`, as KServe, Triton, MLServer and Seldon Core 2 define them),
decoded into the JSON form `agents.sources.inference` reads.

A few dozen lines of the protobuf wire format instead of a dependency and generated code:
only these two messages and the fields the service reads are decoded (names, datatypes,
shapes, typed `contents` or `raw_*_contents`, model name, version, id); anything else is
skipped by its wire type, as protobuf parsers do.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from agents.sources.mapping import NotMapped

VARINT, I64, LEN, I32 = 0, 1, 2, 5
# InferTensorContents: field number -> (contents kind, struct format when packed fixed-size)
_CONTENTS = {1: ("bool", None), 2: ("int32", None), 3: ("int64", None), 4: ("uint32", None),
             5: ("uint64", None), 6: ("fp32", "<f"), 7: ("fp64", "<d"), 8: ("bytes", None)}
# raw contents: little-endian, by datatype
_RAW = {"BOOL": "<?", "UINT8": "<B", "UINT16": "<H", "UINT32": "<I", "UINT64": "<Q",
        "INT8": "<b", "INT16": "<h", "INT32": "<i", "INT64": "<q", "FP32": "<f", "FP64": "<d"}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise NotMapped("a protobuf varint is cut short", "value")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one message: ints for varints and fixed-size
    fields, bytes for length-delimited ones."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == VARINT:
            value, pos = _varint(data, pos)
        elif wire == LEN:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise NotMapped("a protobuf field runs past the end of the message", "value")
            value, pos = data[pos:pos + size], pos + size
        elif wire in (I64, I32):
            width = 8 if wire == I64 else 4
            if pos + width > len(data):
                raise NotMapped("a protobuf field runs past the end of the message", "value")
            value, pos = data[pos:pos + width], pos + width
        else:
            raise NotMapped(f"protobuf wire type {wire} is not one this message uses", "value")
        if number == 0:
            raise NotMapped("not a protobuf message (field number 0)", "value")
        yield number, wire, value


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _packed_varints(wire: int, value: Any) -> list[int]:
    if wire == VARINT:
        return [value]
    out, pos = [], 0
    while pos < len(value):
        number, pos = _varint(value, pos)
        out.append(number)
    return out


def _contents(data: bytes) -> list[Any]:
    values: list[Any] = []
    for number, wire, value in _fields(data):
        kind, fixed = _CONTENTS.get(number, (None, None))
        if kind is None:
            continue
        if (fixed is not None or kind == "bytes") and not isinstance(value, bytes):
            raise NotMapped(f"tensor contents field {number} has the wrong wire type", "value")
        if fixed is not None:
            if len(value) % struct.calcsize(fixed):
                raise NotMapped(f"tensor contents field {number} is cut short", "value")
            values += [v for (v,) in struct.iter_unpack(fixed, value)]
        elif kind == "bytes":
            values.append(value.decode("utf-8", "replace"))
        else:
            numbers = _packed_varints(wire, value)
            if kind == "bool":
                values += [bool(n) for n in numbers]
            elif kind in ("int32", "int64"):
                values += [_signed(n, 64) for n in numbers]
            else:
                values += numbers
    return values


def _tensor(data: bytes) -> dict[str, Any]:
    tensor: dict[str, Any] = {"name": "", "datatype": "", "shape": [], "data": []}
    for number, wire, value in _fields(data):
        if number == 1 and wire == LEN:
            tensor["name"] = value.decode("utf-8", "replace")
        elif number == 2 and wire == LEN:
            tensor["datatype"] = value.decode("utf-8", "replace")
        elif number == 3:
            tensor["shape"] += [_signed(n, 64) for n in _packed_varints(wire, value)]
        elif number == 5 and wire == LEN:
            tensor["data"] = _contents(value)
    return tensor


def _raw(tensor: dict[str, Any], raw: bytes) -> list[Any]:
    datatype = tensor["datatype"]
    if datatype == "BYTES":  # each element: a 4-byte little-endian length, then the bytes
        out, pos = [], 0
        while pos + 4 <= len(raw):
            (size,) = struct.unpack_from("<I", raw, pos)
            out.append(raw[pos + 4:pos + 4 + size].decode("utf-8", "replace"))
            pos += 4 + size
        return out
    fmt = _RAW.get(datatype)
    if fmt is None or len(raw) % struct.calcsize(fmt):
        raise NotMapped(f"raw contents of datatype {datatype!r} cannot be read",
                        f"value.{tensor['name']}")
    return [v for (v,) in struct.iter_unpack(fmt, raw)]


def decode(data: bytes, response: bool) -> dict[str, Any]:
    """A `ModelInferRequest` (inputs: field 5, raw contents 7) or `ModelInferResponse`
    (outputs: 5, raw contents 6) as its JSON form."""
    side, raw_field = ("outputs", 6) if response else ("inputs", 7)
    body: dict[str, Any] = {side: []}
    raws: list[bytes] = []
    for number, wire, value in _fields(data):
        if wire != LEN:
            continue
        if number in (1, 2, 3):
            body[("model_name", "model_version", "id")[number - 1]] = value.decode(
                "utf-8", "replace")
        elif number == 5:
            body[side].append(_tensor(value))
        elif number == raw_field:
            raws.append(value)
    if raws:
        if len(raws) != len(body[side]):
            raise NotMapped(f"{len(raws)} raw contents for {len(body[side])} tensors", "value")
        for tensor, raw in zip(body[side], raws, strict=True):
            tensor["data"] = _raw(tensor, raw)
    return body
