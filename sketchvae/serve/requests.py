"""Checking the API's JSON requests: every problem becomes a `RequestError` naming the field.

Pure Python (no web framework, no torch): `parse_body` turns the raw body into a dict (strict JSON:
NaN and Infinity refused), the `*_request` functions check one endpoint's fields and return plain
values (drawings as float64 numpy stroke-3 arrays in page pixels).
"""

from __future__ import annotations

import json
import math
import numbers

import numpy as np

MAX_BODY = 256 * 1024   # bytes, largest request body (two 2,000-point drawings fit with room to spare)
MAX_N = 64              # most drawings in one answer (n)
MIN_STEPS, MAX_STEPS = 2, 64   # interpolation strip length
MAX_POINTS = 2000       # most rows in one drawing
MAX_OFFSET = 10000.0    # page px, largest |dx| or |dy| of one row
MAX_TEMPERATURE = 2.0   # temperature in (0, MAX_TEMPERATURE]
MAX_SEED = 2**63 - 1
DEFAULT_N = 6
DEFAULT_STEPS = 8
DEFAULT_TEMPERATURE = 0.4


class RequestError(ValueError):
    """A bad request: `field` names the offending field (or "body"), `status` the HTTP status."""

    def __init__(self, field: str, message: str, status: int = 400):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def parse_body(raw: bytes) -> dict:
    """The request body as a JSON object; RequestError("body", ...) otherwise."""
    if len(raw) > MAX_BODY:
        raise RequestError("body", f"request body of {len(raw)} bytes is larger than the limit of {MAX_BODY} "
                                   f"bytes", 413)
    if not raw.strip():
        raise RequestError("body", "empty request body; send a JSON object")
    try:
        text = raw.decode("utf-8")
        data = json.loads(text, parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise RequestError("body", "request body is not UTF-8 text") from None
    except RecursionError:
        raise RequestError("body", "malformed JSON: nested too deeply") from None
    except ValueError as err:  # json.JSONDecodeError is a ValueError
        raise RequestError("body", f"malformed JSON: {err}") from None
    if not isinstance(data, dict):
        raise RequestError("body", f"expected a JSON object, got {_kind(data)}")
    return data


def _kind(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, numbers.Number):
        return f"the number {v!r}"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _only(data: dict, allowed: tuple[str, ...]) -> None:
    extra = sorted(k for k in data if k not in allowed)
    if extra:
        raise RequestError(extra[0], f"unknown field; this endpoint takes: {', '.join(allowed)}")


def _integer(data: dict, field: str, lo: int, hi: int, default: int | None) -> int | None:
    v = data.get(field)
    if v is None:  # absent or null: the default
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise RequestError(field, f"must be an integer between {lo} and {hi}, got {_kind(v)}")
    if not lo <= v <= hi:
        raise RequestError(field, f"must be between {lo} and {hi}, got {v}")
    return v


def _temperature(data: dict) -> float:
    v = data.get("temperature", DEFAULT_TEMPERATURE)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise RequestError("temperature", f"must be a number in (0, {MAX_TEMPERATURE}], got {_kind(v)}")
    if not 0 < v <= MAX_TEMPERATURE:
        raise RequestError("temperature", f"must be in (0, {MAX_TEMPERATURE}], got {v}")
    return float(v)


def _string(data: dict, field: str, required: bool) -> str | None:
    v = data.get(field)
    if v is None:
        if required:
            raise RequestError(field, "missing; " + ("name one of the models from GET /api/models"
                                                     if field == "model" else "required"))
        return None
    if not isinstance(v, str):
        raise RequestError(field, f"must be a string, got {_kind(v)}")
    return v


def drawing(data: dict, field: str) -> np.ndarray:
    """A stroke-3 drawing in page px: a non-empty list of at most MAX_POINTS [dx, dy, pen] rows."""
    if field not in data or data[field] is None:
        raise RequestError(field, "missing; a drawing is a list of [dx, dy, pen_lifted] rows")
    rows = data[field]
    if not isinstance(rows, list):
        raise RequestError(field, f"must be a list of [dx, dy, pen_lifted] rows, got {_kind(rows)}")
    if len(rows) == 0:
        raise RequestError(field, "is empty; draw something first")
    if len(rows) > MAX_POINTS:
        raise RequestError(field, f"has {len(rows)} points; the limit is {MAX_POINTS}")
    out = np.empty((len(rows), 3), dtype=np.float64)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 3:
            raise RequestError(f"{field}[{i}]", f"must be a list [dx, dy, pen_lifted], got {_kind(row)}"
                               + (f" of length {len(row)}" if isinstance(row, list) else ""))
        for j in (0, 1):
            v = row[j]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise RequestError(f"{field}[{i}][{j}]", f"must be a finite number, got {_kind(v)}")
            if abs(v) > MAX_OFFSET:
                raise RequestError(f"{field}[{i}][{j}]", f"offset {v} is larger than {MAX_OFFSET:g} pixels")
            out[i, j] = v
        pen = row[2]
        if isinstance(pen, bool) or not isinstance(pen, (int, float)) or pen not in (0, 1):
            raise RequestError(f"{field}[{i}][2]", f"pen_lifted must be 0 or 1, got {_kind(pen)}")
        out[i, 2] = pen
    return out


def complete_request(data: dict) -> dict:
    _only(data, ("model", "strokes", "n", "temperature", "class", "seed"))
    return {"model": _string(data, "model", True), "strokes": drawing(data, "strokes"),
            "n": _integer(data, "n", 1, MAX_N, DEFAULT_N), "temperature": _temperature(data),
            "cls": _string(data, "class", False), "seed": _integer(data, "seed", 0, MAX_SEED, None)}


def sample_request(data: dict) -> dict:
    _only(data, ("model", "n", "temperature", "class", "seed"))
    return {"model": _string(data, "model", True), "n": _integer(data, "n", 1, MAX_N, DEFAULT_N),
            "temperature": _temperature(data), "cls": _string(data, "class", False),
            "seed": _integer(data, "seed", 0, MAX_SEED, None)}


def interpolate_request(data: dict) -> dict:
    _only(data, ("model", "a", "b", "steps", "temperature", "seed"))
    return {"model": _string(data, "model", True), "a": drawing(data, "a"), "b": drawing(data, "b"),
            "steps": _integer(data, "steps", MIN_STEPS, MAX_STEPS, DEFAULT_STEPS),
            "temperature": _temperature(data), "seed": _integer(data, "seed", 0, MAX_SEED, None)}
