"""Reads PyTorch checkpoints (torch.save zip format) without torch and without running foreign code.

A fairseq checkpoint is a pickle, and unpickling is code execution: any global the pickle names is
imported and called. RestrictedUnpickler.find_class allows only
  - torch's tensor/parameter rebuild functions (replaced by our own numpy versions),
  - torch storage classes and dtypes (turned into markers),
  - collections.OrderedDict and plain builtin containers/scalars,
and turns every other global (omegaconf nodes, argparse.Namespace, os.system, ...) into an inert
Placeholder class: constructing or "calling" it only records the arguments, so nothing runs and
neither fairseq nor omegaconf is needed. Tensors come back as LazyTensor objects that read their
bytes from the archive only when asked (a real checkpoint can carry gigabytes of optimizer state
that we never touch)."""

import collections
import io
import pickle
import struct
import zipfile
import zlib

import numpy as np

from .errors import ConvertError
from .files import require_regular

# data.pkl holds the pickled object graph (configs, tensor records), not the tensor data; real
# fairseq checkpoints keep it to a few MB. A larger declared size is a compression bomb or not a
# checkpoint, refused before it is inflated.
MAX_PICKLE_BYTES = 256 << 20

# dtype names follow the safetensors spelling; BF16 is carried as raw uint16 (numpy has no bfloat16)
_STORAGE_DTYPES = {
    "HalfStorage": "F16", "FloatStorage": "F32", "DoubleStorage": "F64", "BFloat16Storage": "BF16",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL", "UntypedStorage": "U8",
}
_TORCH_DTYPES = {
    "float16": "F16", "half": "F16", "float32": "F32", "float": "F32", "float64": "F64",
    "double": "F64", "bfloat16": "BF16", "int64": "I64", "long": "I64", "int32": "I32",
    "int": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}
NP_DTYPES = {
    "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
def _sized(cls):
    # bytes(n) / bytearray(n) would allocate n bytes on the pickle's say-so
    def make(*args):
        if args and isinstance(args[0], int):
            raise pickle.UnpicklingError("refusing %s(<int>)" % cls.__name__)
        return cls(*args)
    return make


_SAFE_BUILTINS = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset,
                  "int": int, "float": float, "bool": bool, "complex": complex, "str": str,
                  "bytes": _sized(bytes), "bytearray": _sized(bytearray), "slice": slice}


class Placeholder:
    """Stand-in for any class the allowlist rejects. Accepts every construction and state."""

    kg_module = "?"
    kg_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        object.__setattr__(obj, "kg_args", args)
        object.__setattr__(obj, "kg_state", None)
        object.__setattr__(obj, "kg_items", [])
        object.__setattr__(obj, "kg_entries", {})
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        object.__setattr__(self, "kg_state", state)

    def __setattr__(self, name, value):
        self.kg_entries[name] = value

    def __setitem__(self, key, value):
        self.kg_entries[key] = value

    def __call__(self, *args, **kwargs):
        return placeholder_class(self.kg_module, self.kg_name + "()")(*args)

    def append(self, item):
        self.kg_items.append(item)

    def extend(self, items):
        self.kg_items.extend(items)

    def __repr__(self):
        return "<placeholder %s.%s>" % (self.kg_module, self.kg_name)


_placeholder_classes = {}


def placeholder_class(module, name):
    key = (str(module), str(name))
    cls = _placeholder_classes.get(key)
    if cls is None:
        cls = type("Placeholder[%s.%s]" % key, (Placeholder,), {"kg_module": key[0], "kg_name": key[1]})
        _placeholder_classes[key] = cls
    return cls


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


class _DType:
    def __init__(self, dtype):
        self.dtype = dtype


class Storage:
    """One storage record of the archive (data/<key>): a flat array of numel elements."""

    def __init__(self, archive, key, dtype, numel):
        self.archive = archive
        self.key = key
        self.dtype = dtype
        self.numel = numel


class LazyTensor:
    def __init__(self, storage, offset, shape, stride, dtype=None):
        self.storage = storage
        self.offset = offset
        self.shape = tuple(shape)
        self.stride = tuple(stride)
        self.dtype = dtype or storage.dtype

    @property
    def numel(self):
        n = 1
        for s in self.shape:
            n *= s
        return n

    def read(self):
        """numpy array with this tensor's values (BF16 as raw uint16)."""
        return self.storage.archive.read_tensor(self)


def _check_tensor_args(storage, offset, shape, stride):
    if not isinstance(storage, Storage):
        raise pickle.UnpicklingError("tensor rebuilt from %r, not from a storage record" % (storage,))
    if not (isinstance(offset, int) and offset >= 0):
        raise pickle.UnpicklingError("bad storage offset %r" % (offset,))
    if not (isinstance(shape, tuple) and isinstance(stride, tuple) and len(shape) == len(stride)
            and all(isinstance(v, int) and v >= 0 for v in shape + stride)):
        raise pickle.UnpicklingError("bad tensor size/stride %r %r" % (shape, stride))
    if all(shape):
        last = offset + sum((s - 1) * st for s, st in zip(shape, stride))
        if last >= storage.numel:
            raise pickle.UnpicklingError(
                "tensor (offset %d, size %s, stride %s) reaches past its storage '%s' of %d elements"
                % (offset, list(shape), list(stride), storage.key, storage.numel))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    _check_tensor_args(storage, storage_offset, tuple(size), tuple(stride))
    return LazyTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    if not isinstance(dtype, _DType):
        raise pickle.UnpicklingError("tensor with unsupported dtype %r" % (dtype,))
    if storage.dtype != "U8" and storage.dtype != dtype.dtype:
        raise pickle.UnpicklingError("tensor dtype %s on a %s storage" % (dtype.dtype, storage.dtype))
    itemsize = NP_DTYPES[dtype.dtype].itemsize
    if storage.dtype == "U8" and itemsize > 1:
        # an untyped (byte) storage: reinterpret it in elements of the tensor's dtype
        storage = Storage(storage.archive, storage.key, dtype.dtype, storage.numel // itemsize)
    _check_tensor_args(storage, storage_offset, tuple(size), tuple(stride))
    return LazyTensor(storage, storage_offset, size, stride, dtype.dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in (_rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter):
        return placeholder_class("torch._tensor", "_rebuild_from_type_v2")(func, new_type, args)
    return func(*args)


def _reconstructor(cls, base, state):
    # copyreg._reconstructor (pickle protocol < 2 objects): only ever builds a placeholder
    if isinstance(cls, type) and issubclass(cls, Placeholder):
        obj = cls()
    else:
        obj = placeholder_class("copyreg", "_reconstructor")()
    obj.__setstate__(state)
    return obj


def _codecs_encode(text, encoding="utf-8"):
    # protocol-2 pickles spell bytes as _codecs.encode(str, "latin1")
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise pickle.UnpicklingError("refusing _codecs.encode(%r, %r)" % (type(text), encoding))
    return text.encode(encoding)


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _codecs_encode,
    ("torch", "Size"): tuple,
}


class RestrictedUnpickler(pickle.Unpickler):
    """find_class never imports anything; persistent ids resolve to storage records of `archive`."""

    def __init__(self, file, archive=None):
        super().__init__(file)
        self.archive = archive
        self.placeholders = set()

    def find_class(self, module, name):
        fn = _ALLOWED.get((module, name))
        if fn is not None:
            return fn
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if module in ("torch", "torch.storage", "torch.cuda") and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _DType(_TORCH_DTYPES[name])
        self.placeholders.add("%s.%s" % (module, name))
        return placeholder_class(module, name)

    def persistent_load(self, pid):
        if self.archive is None:
            raise pickle.UnpicklingError("persistent id %r outside a checkpoint archive" % (pid,))
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and isinstance(pid[4], int) and pid[4] >= 0):
            raise pickle.UnpicklingError("unsupported persistent id %r" % (pid,))
        return self.archive.storage(pid[2], pid[1].dtype, pid[4])


def restricted_loads(data, archive=None):
    """Unpickles bytes with the restricted rules (used for data.pkl and by the tests)."""
    return RestrictedUnpickler(io.BytesIO(data), archive).load()


class Archive:
    """A torch.save zip archive: <prefix>data.pkl plus one record <prefix>data/<key> per storage."""

    def __init__(self, path):
        self.path = path
        self.storages = {}
        require_regular(path, "checkpoint")
        try:
            self.zip = zipfile.ZipFile(path)
        except OSError as e:
            raise ConvertError("%s: cannot open checkpoint: %s" % (path, e.strerror or e))
        except Exception as e:
            # BadZipFile, or what a damaged central directory raises from inside zipfile
            # (UnicodeDecodeError on a name, struct.error, EOFError, NotImplementedError...)
            with open(path, "rb") as f:
                magic = f.read(4)
            if magic.startswith(b"PK"):
                raise ConvertError("%s: truncated or corrupt checkpoint (zip archive unreadable: %s: %s)"
                                   % (path, type(e).__name__, e))
            raise ConvertError("%s: not a PyTorch zip checkpoint (torch.save format since torch 1.6); "
                               "legacy pickle/tar checkpoints are not supported" % path)
        pkls = [n for n in self.zip.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ConvertError("%s: not a PyTorch checkpoint archive (no single <name>/data.pkl record)"
                               % path)
        self.prefix = pkls[0][: -len("data.pkl")]
        order = self.prefix + "byteorder"
        if order in self.zip.namelist() and self.zip.read(order).strip() != b"little":
            raise ConvertError("%s: big-endian checkpoints are not supported" % path)
        self.placeholders = set()

    def load(self):
        info = self.zip.getinfo(self.prefix + "data.pkl")
        if info.file_size > MAX_PICKLE_BYTES:
            raise ConvertError("%s: data.pkl declares %d bytes uncompressed (%d compressed), more than "
                               "the %d a checkpoint's object graph needs: a compression bomb or not a "
                               "checkpoint" % (self.path, info.file_size, info.compress_size,
                                                MAX_PICKLE_BYTES))
        try:
            data = self.zip.read(self.prefix + "data.pkl")
            up = RestrictedUnpickler(io.BytesIO(data), self)
            obj = up.load()
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise ConvertError("%s: truncated or corrupt checkpoint (%s)" % (self.path, e))
        except MemoryError:
            raise ConvertError("%s: out of memory unpickling the checkpoint (a corrupt or malicious "
                               "object graph)" % self.path)
        except ConvertError:
            raise
        except Exception as e:
            # nothing foreign runs here, so any exception (UnpicklingError, OverflowError on a
            # huge frame length, RecursionError, UnicodeDecodeError...) is a malformed pickle
            raise ConvertError("%s: unreadable checkpoint pickle: %s: %s"
                               % (self.path, type(e).__name__, e))
        self.placeholders = up.placeholders
        return obj

    def storage(self, key, dtype, numel):
        st = self.storages.get(key)
        if st is None:
            name = self.prefix + "data/" + key
            try:
                info = self.zip.getinfo(name)
            except KeyError:
                raise pickle.UnpicklingError("storage record '%s' is missing from the archive" % name)
            need = numel * NP_DTYPES[dtype].itemsize
            if info.file_size < need:
                raise pickle.UnpicklingError("storage record '%s' holds %d bytes, %d needed"
                                             % (name, info.file_size, need))
            st = Storage(self, key, dtype, numel)
            self.storages[key] = st
        return st

    def _record_offset(self, info):
        """File offset of a stored (uncompressed) record's bytes, from its local header."""
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            hdr = f.read(30)
            if len(hdr) != 30 or hdr[:4] != b"PK\x03\x04":
                raise ConvertError("%s: corrupt zip local header for '%s'" % (self.path, info.filename))
            nlen, xlen = struct.unpack("<HH", hdr[26:30])
        return info.header_offset + 30 + nlen + xlen

    def read_bytes(self, storage, begin, length):
        info = self.zip.getinfo(self.prefix + "data/" + storage.key)
        try:
            if info.compress_type == zipfile.ZIP_STORED:
                start = self._record_offset(info) + begin
                with open(self.path, "rb") as f:
                    f.seek(start)
                    data = f.read(length)
            else:
                with self.zip.open(info) as f:
                    f.seek(begin)
                    data = f.read(length)
        except (ConvertError, MemoryError):
            raise
        except OSError as e:
            raise ConvertError("%s: cannot read storage '%s': %s" % (self.path, storage.key, e.strerror or e))
        except Exception as e:
            # a damaged record: BadZipFile (CRC), zlib.error, EOFError, an unsupported method...
            raise ConvertError("%s: corrupt checkpoint: storage '%s': %s: %s"
                               % (self.path, storage.key, type(e).__name__, e))
        if len(data) != length:
            raise ConvertError("%s: truncated checkpoint: storage '%s' ends early"
                               % (self.path, storage.key))
        return data

    def read_tensor(self, t):
        dt = NP_DTYPES[t.dtype]
        n = t.numel
        contiguous = True
        expect = 1
        for s, st in reversed(list(zip(t.shape, t.stride))):
            if s != 1 and st != expect:
                contiguous = False
            expect *= s
        if n == 0:
            return np.zeros(t.shape, dt)
        if contiguous:
            raw = self.read_bytes(t.storage, t.offset * dt.itemsize, n * dt.itemsize)
            return np.frombuffer(raw, dt).reshape(t.shape).copy()
        raw = self.read_bytes(t.storage, 0, t.storage.numel * dt.itemsize)
        flat = np.frombuffer(raw, dt)
        view = np.lib.stride_tricks.as_strided(flat[t.offset:], t.shape,
                                               [s * dt.itemsize for s in t.stride], writeable=False)
        return np.ascontiguousarray(view)


def plain(obj, depth=0, memo=None):
    """Plain dict/list view of a pickled config: omegaconf DictConfig/ValueNode placeholders
    collapse to their `_content`/`_val`, argparse.Namespace to its attribute dict.

    A pickle can share one object from many places (a DAG: 60 levels of two references to the
    same child are 2^60 paths as a tree), so every object is converted once (memo by identity) and
    the shared result reused; a reference back to an object still being converted (a cycle) and
    anything deeper than 64 levels becomes None."""
    if memo is None:
        memo = {}
    if depth > 64:
        return None
    if not isinstance(obj, (Placeholder, dict, list, tuple)):
        return obj
    key = id(obj)
    if key in memo:
        return memo[key][1]
    memo[key] = (obj, None)  # keeps obj alive (its id stays unique) and marks it in progress
    out = None
    if isinstance(obj, Placeholder):
        state = obj.kg_state
        if isinstance(state, tuple) and len(state) == 2:
            state = state[0] if isinstance(state[0], dict) else state[1]
        if isinstance(state, dict):
            if "_content" in state:
                out = plain(state["_content"], depth + 1, memo)
            elif "_val" in state:
                out = plain(state["_val"], depth + 1, memo)
            else:
                out = {k: plain(v, depth + 1, memo) for k, v in state.items() if isinstance(k, str)}
        elif obj.kg_entries:
            out = {k: plain(v, depth + 1, memo) for k, v in obj.kg_entries.items() if isinstance(k, str)}
    elif isinstance(obj, dict):
        out = {k: plain(v, depth + 1, memo) for k, v in obj.items()}
    else:
        out = [plain(v, depth + 1, memo) for v in obj]
    memo[key] = (obj, out)
    return out


def load_checkpoint(path):
    """(top-level object, Archive) of a torch.save checkpoint."""
    archive = Archive(path)
    return archive.load(), archive
