"""The wire between the trusted checker and a student's worker: plain data only, no pickle.

A message is a JSON header and a list of binary blobs (the tensors' bytes), framed as::

    <8-byte header length> <4-byte blob count> header, then per blob <8-byte length> bytes

Values are encoded as JSON where JSON can say them (None, bool, int, float with NaN and
±inf, str, list) and as a one-key object otherwise::

    {"tuple": [...]}    {"dict": [[key, value], ...]}    {"dtype": "float32"}
    {"tensor": blob index, "dtype": "float32", "shape": [2, 3], "requires_grad": false}
    (a tensor on the "meta" device: ``"device": "meta"`` and an empty blob; any other
    device's tensor crosses as a CPU tensor)

Whatever else a side wants to send (a proxy's handle, a model) is a one-key object that the
caller's ``extra`` function makes and its ``special`` function reads. The checker reads
what a worker sends as hostile: sizes are bounded, dtypes come from a fixed list, and a
blob's length must be exactly what its dtype and shape need.

This module imports nothing of coursekit: the worker runs it in a sandbox where coursekit
cannot be imported.
"""
from __future__ import annotations

import json
import math
import os
import select
import struct
import time

import torch

MAX_MESSAGE = 256 << 20        # bytes in one message, blobs included
MAX_HEADER = 16 << 20          # bytes of its JSON header
MAX_DEPTH = 32                 # nesting of containers
MAX_ITEMS = 1_000_000          # values in one message
DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
    torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)}


class WireError(ValueError):
    """A message that breaks the format: too large, too deep, an unknown tag or dtype, a blob
    of the wrong length."""


class WireTimeout(TimeoutError):
    """No complete message arrived in time."""


class WireClosed(EOFError):
    """The other side closed the pipe (it exited or died)."""


# --------------------------------------------------------------------------- values

def tensors_in(value, exact: bool, out: list | None = None, _depth: int = 0) -> list:
    """The tensors in a value (lists, tuples and dict values, down to MAX_DEPTH), in one order
    that the worker and the checker share to pair the tensors of a call's arguments.

    Args:
        exact: count only exact ``torch.Tensor`` objects (the worker: a subclass there is a
            student's object), or any tensor (the checker: see ``checker._tensors``).
    """
    out = [] if out is None else out
    if _depth <= MAX_DEPTH:
        if type(value) is torch.Tensor or (not exact and isinstance(value, torch.Tensor)):
            out.append(value)
        elif type(value) in (list, tuple):
            for v in value:
                tensors_in(v, exact, out, _depth + 1)
        elif type(value) is dict:
            for v in value.values():
                tensors_in(v, exact, out, _depth + 1)
    return out


def encode(value, blobs: list, extra=None, _depth: int = 0, _count: list | None = None):
    """``value`` as JSON-able data, appending tensors' bytes to ``blobs``. ``extra(value)``
    returns the encoding of a value this module does not know, or None to refuse it."""
    count = _count if _count is not None else [0]
    count[0] += 1
    if _depth > MAX_DEPTH or count[0] > MAX_ITEMS:
        raise WireError(f"the value is nested deeper than {MAX_DEPTH} or holds more than {MAX_ITEMS} items")
    if value is None or type(value) in (bool, int, str):
        return value
    if type(value) is float:
        return value if math.isfinite(value) else {"float": repr(value)}
    if type(value) is list:
        return [encode(v, blobs, extra, _depth + 1, count) for v in value]
    if type(value) is tuple:
        return {"tuple": [encode(v, blobs, extra, _depth + 1, count) for v in value]}
    if type(value) is dict:
        return {"dict": [[encode(k, blobs, extra, _depth + 1, count), encode(v, blobs, extra, _depth + 1, count)]
                         for k, v in value.items()]}
    if type(value) is torch.dtype:
        return {"dtype": str(value).removeprefix("torch.")}
    made = extra(value) if extra is not None else None
    if made is not None:
        return made
    if type(value) is torch.Tensor:
        return encode_tensor(value, blobs)
    raise WireError(f"a {type(value).__name__} cannot be sent")


def encode_tensor(t: torch.Tensor, blobs: list) -> dict:
    dtype = str(t.dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise WireError(f"dtype {t.dtype} cannot be sent (allowed: {', '.join(DTYPES)})")
    if t.device.type == "meta":   # a shape and a dtype, no values
        blobs.append(b"")
        return {"tensor": len(blobs) - 1, "dtype": dtype, "shape": list(t.shape),
                "requires_grad": bool(t.requires_grad), "device": "meta"}
    data = t.detach().to("cpu").contiguous()
    blobs.append(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return {"tensor": len(blobs) - 1, "dtype": dtype, "shape": list(data.shape),
            "requires_grad": bool(t.requires_grad)}


def decode(data, blobs: list, special=None, _depth: int = 0):
    """The value that :func:`encode` encoded. ``special(tag, data)`` decodes the one-key
    objects this module does not know (it raises :class:`WireError` for unknown ones)."""
    if _depth > MAX_DEPTH:
        raise WireError(f"the value is nested deeper than {MAX_DEPTH}")
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is list:
        return [decode(v, blobs, special, _depth + 1) for v in data]
    if type(data) is not dict or len(data) == 0:
        raise WireError(f"not an encoded value: {str(data)[:80]}")
    tag = next(iter(data))
    if tag == "float" and data[tag] in ("nan", "inf", "-inf"):
        return float(data[tag])
    if tag == "tuple" and type(data[tag]) is list:
        return tuple(decode(v, blobs, special, _depth + 1) for v in data[tag])
    if tag == "dict" and type(data[tag]) is list:
        out = {}
        for pair in data[tag]:
            if type(pair) is not list or len(pair) != 2:
                raise WireError("a dict item is not a [key, value] pair")
            key = decode(pair[0], blobs, special, _depth + 1)
            try:
                out[key] = decode(pair[1], blobs, special, _depth + 1)
            except TypeError:
                raise WireError(f"a dict key of type {type(key).__name__} cannot be hashed") from None
        return out
    if tag == "dtype":
        return _dtype(data[tag])
    if tag == "tensor":
        return decode_tensor(data, blobs)
    if special is not None:
        return special(tag, data)
    raise WireError(f"unknown value tag {tag!r}")


def _dtype(name) -> torch.dtype:
    if name not in DTYPES:
        raise WireError(f"unknown dtype {str(name)[:40]!r} (allowed: {', '.join(DTYPES)})")
    return DTYPES[name]


def decode_tensor(data: dict, blobs: list) -> torch.Tensor:
    dtype = _dtype(data.get("dtype"))
    shape, index = data.get("shape"), data.get("tensor")
    if (type(shape) is not list or len(shape) > 64 or not all(type(s) is int and s >= 0 for s in shape)
            or type(index) is not int or not 0 <= index < len(blobs)):
        raise WireError("a tensor's shape or blob index is malformed")
    blob = blobs[index]
    numel = math.prod(shape)
    if data.get("device") == "meta":
        return torch.empty(shape, dtype=dtype, device="meta")
    size = numel * torch.empty((), dtype=dtype).element_size()
    if len(blob) != size:
        raise WireError(f"a tensor of shape {tuple(shape)} and dtype {dtype} needs {size} bytes, got {len(blob)}")
    if numel == 0:
        t = torch.empty(shape, dtype=dtype)
    else:
        t = torch.frombuffer(bytearray(blob), dtype=torch.uint8).view(dtype).reshape(shape).clone()
    if data.get("requires_grad") is True and (dtype.is_floating_point or dtype.is_complex):
        t.requires_grad_()
    return t


# --------------------------------------------------------------------------- messages

def write_message(fd: int, header: dict, blobs: list) -> None:
    head = json.dumps(header, allow_nan=False).encode()
    parts = [struct.pack("<QI", len(head), len(blobs)), head]
    for blob in blobs:
        parts += [struct.pack("<Q", len(blob)), blob]
    data = b"".join(parts)
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Reader:
    """Reads whole messages from a file descriptor, each within a deadline."""

    def __init__(self, fd: int):
        self.fd = fd
        self.total = 0

    def _read(self, n: int, deadline: float | None) -> bytes:
        chunks, left = [], n
        while left:
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0 or not select.select([self.fd], [], [], wait)[0]:
                    raise WireTimeout("no reply in time")
            chunk = os.read(self.fd, min(left, 1 << 20))
            if not chunk:
                raise WireClosed("the other side closed the connection")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _size(self, n: int) -> int:
        self.total += n
        if self.total > MAX_MESSAGE:
            raise WireError(f"a message larger than {MAX_MESSAGE} bytes")
        return n

    def read(self, timeout: float | None = None) -> tuple[dict, list]:
        deadline = None if timeout is None else time.monotonic() + timeout
        self.total = 0
        head_size, count = struct.unpack("<QI", self._read(12, deadline))
        if head_size > MAX_HEADER:
            raise WireError(f"a header larger than {MAX_HEADER} bytes")
        head = self._read(self._size(head_size), deadline)
        if count > MAX_ITEMS:
            raise WireError(f"a message with {count} blobs")
        blobs = []
        for _ in range(count):
            (size,) = struct.unpack("<Q", self._read(8, deadline))
            blobs.append(self._read(self._size(size), deadline))
        try:
            header = json.loads(head)
        except (ValueError, RecursionError) as e:
            raise WireError(f"the header is not JSON: {e}") from None
        if type(header) is not dict:
            raise WireError("the header is not a JSON object")
        return header, blobs
