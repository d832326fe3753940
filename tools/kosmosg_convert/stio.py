"""safetensors reading and writing with numpy only.

Writer layout: 8-byte little-endian header length N, N bytes of JSON (padded with spaces so the data
starts at a multiple of 64 bytes), then the tensors back to back in the order given, with no holes
(what the reference safetensors implementation demands). With float tensors first and the U8 ones
last, every float tensor starts at a multiple of its element size."""

import json
import os
import struct

import numpy as np

from .errors import ConvertError
from .files import require_regular
from .ptload import NP_DTYPES

HEADER_ALIGN = 64
MAX_HEADER = 100 * 1024 * 1024


class STTensor:
    def __init__(self, st, name, dtype, shape, begin, end):
        self.st = st
        self.name = name
        self.dtype = dtype
        self.shape = tuple(shape)
        self.begin = begin
        self.end = end

    @property
    def numel(self):
        n = 1
        for s in self.shape:
            n *= s
        return n

    def read(self):
        return self.st.read(self)


class SafetensorsFile:
    def __init__(self, path):
        self.path = path
        require_regular(path, "weights")
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                head = f.read(8)
                if len(head) != 8:
                    raise ConvertError("%s: truncated safetensors file (no header length)" % path)
                (n,) = struct.unpack("<Q", head)
                if n > MAX_HEADER or 8 + n > size:
                    raise ConvertError("%s: truncated or corrupt safetensors file (header length %d, "
                                       "file size %d)" % (path, n, size))
                header = f.read(n)
        except OSError as e:
            raise ConvertError("%s: cannot read: %s" % (path, e.strerror or e))
        try:
            hdr = json.loads(header.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ConvertError("%s: corrupt safetensors header: %s" % (path, e))
        if not isinstance(hdr, dict):
            raise ConvertError("%s: corrupt safetensors header (not a JSON object)" % path)
        self.data_start = 8 + n
        data_size = size - self.data_start
        self.metadata = hdr.pop("__metadata__", None) or {}
        self.tensors = {}
        for name, d in hdr.items():
            try:
                dtype = d["dtype"]
                shape = [int(s) for s in d["shape"]]
                begin, end = (int(v) for v in d["data_offsets"])
            except (KeyError, TypeError, ValueError, OverflowError):
                raise ConvertError("%s: tensor '%s': malformed header entry" % (path, name))
            if dtype not in NP_DTYPES or any(s < 0 for s in shape):
                raise ConvertError("%s: tensor '%s': unsupported dtype %s or bad shape %s"
                                   % (path, name, dtype, shape))
            t = STTensor(self, name, dtype, shape, begin, end)
            if not (0 <= begin <= end <= data_size) or end - begin != t.numel * NP_DTYPES[dtype].itemsize:
                raise ConvertError("%s: tensor '%s': data range [%d, %d) does not fit %s %s in %d data "
                                   "bytes (truncated file?)" % (path, name, begin, end, dtype, shape,
                                                                data_size))
            self.tensors[name] = t

    def read(self, t):
        with open(self.path, "rb") as f:
            f.seek(self.data_start + t.begin)
            raw = f.read(t.end - t.begin)
        if len(raw) != t.end - t.begin:
            raise ConvertError("%s: tensor '%s': truncated data" % (self.path, t.name))
        return np.frombuffer(raw, NP_DTYPES[t.dtype]).reshape(t.shape).copy()


def write_safetensors(path, entries, metadata):
    """entries: list of (name, dtype, shape, produce) where produce() returns a numpy array of
    exactly that dtype and shape. Writes to path.tmp first and renames, so a failed conversion
    leaves no half-written model file behind."""
    header = {"__metadata__": metadata}
    offset = 0
    for name, dtype, shape, _ in entries:
        nbytes = NP_DTYPES[dtype].itemsize
        for s in shape:
            nbytes *= s
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    pad = (-(8 + len(blob))) % HEADER_ALIGN
    blob += b" " * pad
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for name, dtype, shape, produce in entries:
                arr = produce()
                if arr.dtype != NP_DTYPES[dtype] or tuple(arr.shape) != tuple(shape):
                    raise ConvertError("internal: tensor '%s' produced %s %s, header says %s %s"
                                       % (name, arr.dtype, list(arr.shape), dtype, list(shape)))
                f.write(np.ascontiguousarray(arr).tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            # ENOSPC, EFBIG, EIO...: the cause with its errno, not a traceback
            raise ConvertError("%s: write failed: %s (nothing was written; an existing file is "
                               "unchanged)" % (path, e.strerror or e))
        raise
    return 8 + len(blob) + offset
