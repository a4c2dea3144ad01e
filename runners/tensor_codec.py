"""The tensor format at a network's cut: how the tensors that cross it are sent, at 32, 16, 8 or 4 bits per value.

Plain numpy and the standard library only, so the device-side and server-side
scripts of a split deployment use this very file (it ships inside optiseg as
``optiseg._runners.tensor_codec``, and optiseg imports it from there).

* 32 bits: the float32 values as they are.
* 16 bits: float16 (values beyond +-65504 are clipped to it).
* 8 and 4 bits: uniform affine quantization, ``q = clip(round(x / scale) + zero_point, 0, 2**bits - 1)``
  and back ``x' = (q - zero_point) * scale``, with ``scale = (hi - lo) / (2**bits - 1)`` over the range
  ``[lo, hi]`` of the values widened to include 0 (so 0 is exact and the zero point is an integer in
  range), per tensor or per channel (``axis``, 1 for NCHW). Every value comes back within ``scale / 2``.
  4-bit codes are packed two per byte, the first value in the low nibble.

``encode(array, bits, per_channel)`` returns ``(payload, header)``: the payload
bytes (``payload_nbytes(array.size, bits)`` of them) and a JSON-safe header
(shape, dtype, bits, scale and zero point) that ``decode(payload, header)``
needs. ``encode_frame`` / ``decode_frame`` put several named tensors into one
message: ``b"OSGT"``, the header length (uint32, little-endian), the JSON
header, then the payloads in order.

A segmentation result travels back as ``encode_mask(mask)``: height and width
(two uint32, little-endian), then the class index of each pixel as uint8, row by row
(``mask_nbytes(height, width)`` bytes); ``decode_mask`` reads it.

On a stream socket each message travels as ``send_message`` writes it: its length
(uint64, little-endian), then its bytes; ``recv_message`` reads one back (``None``
when the peer closed the connection cleanly between messages).
"""

from __future__ import annotations

import json
import struct

import numpy as np

BITS = (32, 16, 8, 4)
MAGIC = b"OSGT"
FLOAT16_MAX = float(np.finfo(np.float16).max)


def payload_nbytes(count: int, bits: int) -> int:
    """Bytes that ``count`` values take at ``bits`` per value (4-bit codes two per byte, rounded up)."""
    _check_bits(bits)
    return (int(count) * bits + 7) // 8


def encode(array, bits: int, per_channel: bool = False, axis: int = 1) -> tuple[bytes, dict]:
    """``array`` (float) at ``bits`` per value -> ``(payload, header)``; see the module docstring."""
    _check_bits(bits)
    values = np.asarray(array, dtype=np.float32)
    header = {"shape": list(values.shape), "dtype": "float32", "bits": bits}
    if bits == 32:
        return np.ascontiguousarray(values).astype("<f4").tobytes(), header
    if bits == 16:
        return np.clip(values, -FLOAT16_MAX, FLOAT16_MAX).astype("<f2").tobytes(), header
    levels = (1 << bits) - 1
    if per_channel:
        if values.ndim < 2 or not -values.ndim <= axis < values.ndim:
            raise ValueError(f"per-channel quantization needs an axis of the array; shape {values.shape}, axis {axis}")
        axis = axis % values.ndim
        reduce = tuple(i for i in range(values.ndim) if i != axis)
        lo = np.minimum(values.min(axis=reduce), 0.0) if values.size else np.zeros(values.shape[axis], np.float32)
        hi = np.maximum(values.max(axis=reduce), 0.0) if values.size else np.zeros(values.shape[axis], np.float32)
    else:
        lo = np.float32(min(float(values.min()), 0.0)) if values.size else np.float32(0)
        hi = np.float32(max(float(values.max()), 0.0)) if values.size else np.float32(0)
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    span = hi - lo
    scale = np.where(span > 0, span / levels, 1.0)
    zero_point = np.clip(np.round(-lo / scale), 0, levels)
    broadcast = _broadcast_shape(values.ndim, axis) if per_channel else ()
    s, z = scale.reshape(broadcast), zero_point.reshape(broadcast)
    codes = np.clip(np.round(values / s) + z, 0, levels).astype(np.uint8).ravel()
    if bits == 4:
        if codes.size % 2:
            codes = np.append(codes, np.uint8(0))
        codes = (codes[0::2] | (codes[1::2] << 4)).astype(np.uint8)
    header.update(
        per_channel=bool(per_channel),
        axis=int(axis) if per_channel else None,
        scale=[float(v) for v in np.ravel(scale)],
        zero_point=[int(v) for v in np.ravel(zero_point)],
    )
    return codes.tobytes(), header


def decode(payload: bytes, header: dict) -> np.ndarray:
    """The float32 array that ``encode`` wrote as ``(payload, header)``."""
    shape, bits = tuple(header["shape"]), int(header["bits"])
    _check_bits(bits)
    count = int(np.prod(shape)) if shape else 1
    if len(payload) != payload_nbytes(count, bits):
        raise ValueError(f"payload of {len(payload)} bytes for {count} values at {bits} bits (expected {payload_nbytes(count, bits)})")
    if bits == 32:
        return np.frombuffer(payload, "<f4").astype(np.float32).reshape(shape)
    if bits == 16:
        return np.frombuffer(payload, "<f2").astype(np.float32).reshape(shape)
    raw = np.frombuffer(payload, np.uint8)
    if bits == 4:
        raw = np.stack([raw & 0x0F, raw >> 4], axis=1).ravel()[:count]
    codes = raw.astype(np.float32).reshape(shape)
    scale = np.asarray(header["scale"], np.float64)
    zero_point = np.asarray(header["zero_point"], np.float64)
    broadcast = _broadcast_shape(len(shape), int(header["axis"])) if header.get("per_channel") else ()
    return ((codes - zero_point.reshape(broadcast)) * scale.reshape(broadcast)).astype(np.float32)


def encode_frame(tensors, bits: int, per_channel: bool = False, axis: int = 1) -> bytes:
    """Several named tensors (a mapping name -> array, in order) as one message at ``bits`` per value."""
    entries, payloads = [], []
    for name, array in tensors.items():
        payload, header = encode(array, bits, per_channel, axis)
        entries.append({"name": str(name), "nbytes": len(payload), **header})
        payloads.append(payload)
    head = json.dumps({"tensors": entries}, separators=(",", ":")).encode("utf-8")
    return MAGIC + struct.pack("<I", len(head)) + head + b"".join(payloads)


def decode_frame(data: bytes) -> dict:
    """The named float32 arrays of a message written by :func:`encode_frame`, in order."""
    if data[:4] != MAGIC or len(data) < 8:
        raise ValueError("not a tensor frame (bad magic)")
    (length,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8 : 8 + length].decode("utf-8"))
    offset, out = 8 + length, {}
    for entry in header["tensors"]:
        end = offset + int(entry["nbytes"])
        if end > len(data):
            raise ValueError(f"tensor frame truncated in {entry['name']!r}")
        out[entry["name"]] = decode(data[offset:end], entry)
        offset = end
    if offset != len(data):
        raise ValueError(f"tensor frame has {len(data) - offset} bytes after its last tensor")
    return out


def mask_nbytes(height: int, width: int) -> int:
    """Bytes of an ``encode_mask`` message for a ``height`` x ``width`` mask."""
    return 8 + int(height) * int(width)


def encode_mask(mask) -> bytes:
    """A 2-D mask of class indices (0..255) as one message: its size, then one byte per pixel."""
    values = np.asarray(mask)
    if values.ndim != 2 or (values.size and (values.min() < 0 or values.max() > 255)):
        raise ValueError(f"a mask is 2-D with class indices 0..255; got shape {values.shape}")
    return struct.pack("<II", *values.shape) + np.ascontiguousarray(values, dtype=np.uint8).tobytes()


def decode_mask(data: bytes):
    """The uint8 mask an ``encode_mask`` message holds."""
    if len(data) < 8:
        raise ValueError("not a mask message (shorter than its header)")
    height, width = struct.unpack("<II", data[:8])
    if len(data) != mask_nbytes(height, width):
        raise ValueError(f"mask message of {len(data)} bytes for {height}x{width} (expected {mask_nbytes(height, width)})")
    return np.frombuffer(data[8:], np.uint8).reshape(height, width)


def send_message(sock, data: bytes) -> None:
    """Send one length-prefixed message on a stream socket."""
    sock.sendall(struct.pack("<Q", len(data)) + data)


def recv_message(sock, max_bytes: int = 1 << 31):
    """One message written by :func:`send_message`; ``None`` if the peer closed before a new one began."""
    prefix = _recv_exactly(sock, 8, allow_eof=True)
    if prefix is None:
        return None
    (length,) = struct.unpack("<Q", prefix)
    if length > max_bytes:
        raise ValueError(f"message of {length} bytes announced, more than the {max_bytes} allowed")
    return _recv_exactly(sock, length)


def _recv_exactly(sock, count: int, allow_eof: bool = False):
    chunks, received = [], 0
    while received < count:
        chunk = sock.recv(min(count - received, 1 << 20))
        if not chunk:
            if allow_eof and received == 0:
                return None
            raise ConnectionError(f"connection closed after {received} of {count} bytes")
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)


def _broadcast_shape(ndim: int, axis: int) -> tuple[int, ...]:
    return tuple(-1 if i == axis else 1 for i in range(ndim))


def _check_bits(bits) -> None:
    if isinstance(bits, bool) or bits not in BITS:
        raise ValueError(f"bits={bits!r} is invalid: choose one of {', '.join(map(str, BITS))}")
