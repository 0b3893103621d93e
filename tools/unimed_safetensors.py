"""Minimal safetensors reader/writer (numpy only; torch tensors accepted).

Shared by tools/convert_checkpoint.py and tests/reference/make_model.py.

File layout written here:
  * 8-byte little-endian unsigned header length N
  * N bytes of UTF-8 JSON:
      {"__metadata__": {...}, name: {"dtype", "shape", "data_offsets": [b, e]}, ...}
    padded with spaces so that the tensor data starts at a multiple of 8
  * the tensors, contiguous, little-endian, in the order they were given.

Floating-point tensors are stored as F32, F16 or BF16 (BF16 uses
round-to-nearest-even of the float32 bit pattern).  Integer tensors are
stored unchanged (I64 / I32 / ...).
"""

import json
import struct

import numpy as np

# Public dtype names accepted by the command-line tools.
DTYPE_CHOICES = ("f32", "f16", "bf16")

_ST_NAME = {"f32": "F32", "f16": "F16", "bf16": "BF16"}

_INT_CODES = {
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}

_READ_NUMPY = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


def _to_numpy(t):
    """Accept a numpy array or a torch tensor (any float dtype incl. bf16)."""
    if isinstance(t, np.ndarray):
        return t
    # torch tensor, imported lazily so this module works without torch
    import torch

    t = t.detach().cpu()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.to(torch.float32)
    return t.contiguous().numpy()


def f32_to_bf16_bits(a):
    """float32 array -> uint16 array of bfloat16 bits (round to nearest even)."""
    a = np.ascontiguousarray(a, dtype="<f4")
    bits = a.view("<u4").astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    out = rounded.astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        # keep NaN a (quiet) NaN with the original sign
        out[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)
    return out


def bf16_bits_to_f32(u16):
    """uint16 bfloat16 bits -> float32 array (exact)."""
    return (np.asarray(u16, dtype="<u2").astype("<u4") << 16).view("<f4")


def encode_tensor(arr, dtype="f32"):
    """Return (safetensors dtype string, bytes) for one array."""
    arr = _to_numpy(arr)
    if arr.dtype.kind == "f":
        if dtype not in _ST_NAME:
            raise ValueError("unsupported dtype %r (use one of %s)" % (dtype, ", ".join(DTYPE_CHOICES)))
        a32 = np.ascontiguousarray(arr, dtype="<f4")
        if dtype == "f32":
            data = a32
        elif dtype == "f16":
            data = a32.astype("<f2")  # numpy rounds to nearest even
        else:
            data = f32_to_bf16_bits(a32)
        return _ST_NAME[dtype], data.tobytes()
    code = _INT_CODES.get(arr.dtype)
    if code is None:
        raise ValueError("cannot store numpy dtype %s" % arr.dtype)
    return code, np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def write_safetensors(path, tensors, dtype="f32", metadata=None):
    """Write an ordered mapping name -> array/tensor to `path`.

    Float tensors are converted to `dtype` ("f32", "f16" or "bf16").
    """
    meta = {"format": "pt"}
    if metadata:
        meta.update({str(k): str(v) for k, v in metadata.items()})
    header = {"__metadata__": meta}
    arrays = []
    offset = 0
    for name, t in tensors.items():
        arr = _to_numpy(t)
        if arr.dtype.kind == "f":
            if dtype not in _ST_NAME:
                raise ValueError("unsupported dtype %r (use one of %s)" % (dtype, ", ".join(DTYPE_CHOICES)))
            code, size = _ST_NAME[dtype], (4 if dtype == "f32" else 2)
        else:
            code, size = _INT_CODES.get(arr.dtype), arr.dtype.itemsize
            if code is None:
                raise ValueError("cannot store numpy dtype %s" % arr.dtype)
        nbytes = int(arr.size) * size
        header[name] = {
            "dtype": code,
            "shape": [int(s) for s in arr.shape],
            "data_offsets": [offset, offset + nbytes],
        }
        arrays.append((name, t, nbytes))
        offset += nbytes
    hdr = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    pad = (-(8 + len(hdr))) % 8
    hdr += b" " * pad
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        for name, t, nbytes in arrays:  # one tensor at a time keeps memory low
            _code, data = encode_tensor(t, dtype)
            assert len(data) == nbytes, name
            f.write(data)


def read_header(path):
    """Return (header dict without __metadata__, metadata dict, data start)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        hdr = json.loads(f.read(n).decode("utf-8"))
    meta = hdr.pop("__metadata__", {})
    return hdr, meta, 8 + n


def read_safetensors(path, as_float32=True):
    """Read a file written by write_safetensors (or any safetensors file).

    Returns an ordered dict name -> numpy array (ordered by data offset).
    F16/BF16 are widened to float32 when as_float32 is true (BF16 is always
    returned as float32 because numpy has no bfloat16).
    """
    hdr, _meta, start = read_header(path)
    out = {}
    with open(path, "rb") as f:
        for name, info in sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            b, e = info["data_offsets"]
            shape = tuple(info["shape"])
            code = info["dtype"]
            if code == "BF16":
                raw = np.empty((e - b) // 2, dtype="<u2")
            elif code in _READ_NUMPY:
                raw = np.empty((e - b) // np.dtype(_READ_NUMPY[code]).itemsize, dtype=_READ_NUMPY[code])
            else:
                raise ValueError("%s: unsupported safetensors dtype %s" % (name, code))
            if raw.nbytes != e - b:
                raise ValueError("%s: data_offsets do not match dtype %s" % (name, code))
            f.seek(start + b)
            if f.readinto(memoryview(raw).cast("B")) != e - b:
                raise ValueError("%s: file truncated" % name)
            if code == "BF16":
                raw = bf16_bits_to_f32(raw)
            elif code == "F16" and as_float32:
                raw = raw.astype(np.float32)
            out[name] = raw.reshape(shape)
    return out
