"""A pickle reader that runs no code, for the one pickled format oodkit reads: the
CIFAR-10 / CIFAR-100 "python version" batches (dicts of lists, strings, numbers and
numpy arrays of numbers). ``pickle.load`` would call whatever a crafted file names;
this reader resolves only numpy's array reconstruction, in the one form numpy's writer
uses, and refuses anything else by name."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

__all__ = ["UnsafePickle", "load_plain_pickle"]

_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
_MAX_NODES = 10_000_000  # containers and values in one batch (CIFAR's hold a few tens of thousands)


class _ArrayClass:
    """Stands for ``numpy.ndarray`` where a pickle names it: only as the first argument of
    the array reconstruction below, never called."""


def _reconstruct(cls, shape, typecode):
    """numpy's ``_reconstruct`` in the one form protocol 2 writes, ``(ndarray, (0,), b'b')``:
    an empty array that BUILD then fills from the pickle's own bytes (so an array never
    holds more than the file)."""
    import numpy as np

    if cls is not _ArrayClass or tuple(shape) != (0,) or typecode not in (b"b", "b"):
        raise UnsafePickle("it rebuilds an array in a form numpy's writer does not use")
    return np.ndarray.__new__(np.ndarray, (0,), "b")


def _latin1(text, encoding="latin1"):
    """``_codecs.encode`` as Python 3 writes bytes under protocol 2: latin1 only."""
    if encoding != "latin1" or not isinstance(text, str):
        raise UnsafePickle("it encodes bytes in another form than latin1")
    return text.encode("latin1")


def _dtype(name, align=False, copy=True):
    import numpy as np

    if not isinstance(name, str) or np.dtype(name).hasobject:
        raise UnsafePickle("it asks for an array of Python objects")
    return np.dtype(name, align, copy)


class UnsafePickle(ValueError):
    """A pickle that asks for something other than plain data."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _RECONSTRUCT:
            return _reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return _ArrayClass
        if (module, name) == ("numpy", "dtype"):
            return _dtype
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        raise UnsafePickle(f"it asks for {module}.{name}")

    def persistent_load(self, pid):
        raise UnsafePickle("it holds a persistent reference")


def _check_plain(obj, file_size: int):
    """Plain containers, strings, bytes, numbers and numeric arrays only; each container
    visited once (shared sub-objects would otherwise multiply the walk), at most 20 deep
    and _MAX_NODES in all; no array larger than the file."""
    seen, stack, nodes = set(), [(obj, 0)], 0
    while stack:
        o, depth = stack.pop()
        nodes += 1
        if depth > 20 or nodes > _MAX_NODES:
            raise UnsafePickle("it nests deeper than 20 levels or holds too many values")
        if isinstance(o, (dict, list, tuple)):
            if id(o) in seen:
                continue
            seen.add(id(o))
            items = [x for kv in o.items() for x in kv] if isinstance(o, dict) else list(o)
            stack.extend((x, depth + 1) for x in items)
        elif isinstance(o, np.ndarray):
            if o.dtype.hasobject:
                raise UnsafePickle("it holds an array of Python objects")
            if o.nbytes > file_size:
                raise UnsafePickle(f"it claims an array of {o.nbytes} bytes in a file of {file_size}")
        elif not (o is None or isinstance(o, (str, bytes, bool, int, float))):
            raise UnsafePickle(f"it holds a {type(o).__name__}")


def load_plain_pickle(path, encoding: str = "latin1"):
    """The plain data in the pickle file ``path``; UnsafePickle (a ValueError, one line
    naming the file) for anything that would need code to rebuild."""
    path = Path(path)
    data = path.read_bytes()
    try:
        obj = _PlainUnpickler(io.BytesIO(data), encoding=encoding).load()
        _check_plain(obj, len(data))
    except UnsafePickle as e:
        raise UnsafePickle(f"refusing {path}: {e}; oodkit reads only plain data (lists, numbers, strings, "
                           "numeric arrays) from pickled files") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            RecursionError, MemoryError) as e:
        raise UnsafePickle(f"{path} is not a readable pickled batch ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
    return obj
