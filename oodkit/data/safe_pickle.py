"""A pickle reader that runs no code, for the one pickled format oodkit reads: the
CIFAR-10 / CIFAR-100 "python version" batches (dicts of lists, strings, numbers and
numpy arrays of numbers). ``pickle.load`` would call whatever a crafted file names;
this reader resolves only numpy's array reconstruction and refuses anything else by name."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

__all__ = ["UnsafePickle", "load_plain_pickle"]

# what a numpy array pickled by protocol 2 asks for (numpy 1 and 2 module names; Python 3
# writes its bytes as _codecs.encode(text, "latin1"), a pure function)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class UnsafePickle(ValueError):
    """A pickle that asks for something other than plain data."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickle(f"it asks for {module}.{name}")

    def persistent_load(self, pid):
        raise UnsafePickle("it holds a persistent reference")


def _check_plain(obj, depth=0):
    """Plain containers, strings, bytes, numbers and numeric arrays only."""
    if depth > 20:
        raise UnsafePickle("it nests deeper than 20 levels")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, depth + 1)
            _check_plain(v, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_plain(v, depth + 1)
    elif isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise UnsafePickle("it holds an array of Python objects")
    elif not (obj is None or isinstance(obj, (str, bytes, bool, int, float))):
        raise UnsafePickle(f"it holds a {type(obj).__name__}")


def load_plain_pickle(path, encoding: str = "latin1"):
    """The plain data in the pickle file ``path``; UnsafePickle (a ValueError, one line
    naming the file) for anything that would need code to rebuild."""
    path = Path(path)
    try:
        obj = _PlainUnpickler(io.BytesIO(path.read_bytes()), encoding=encoding).load()
        _check_plain(obj)
    except UnsafePickle as e:
        raise UnsafePickle(f"refusing {path}: {e}; oodkit reads only plain data (lists, numbers, strings, "
                           "numeric arrays) from pickled files") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            RecursionError, MemoryError) as e:
        raise UnsafePickle(f"{path} is not a readable pickled batch ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
    return obj
