"""Parameter constraints, declared once per class and checked at the boundary (in the
spirit of scikit-learn's ``_parameter_constraints``): every public parameter gets its type
and range checked with its name in a one-line ValueError, at ``fit`` and when a detector
file is read, before any work."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

__all__ = ["Int", "Real", "Bool", "Choice", "Pair", "Device", "Any", "check_params", "regular_file"]


def _num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclass(frozen=True)
class Int:
    lo: int | None = None
    hi: int | None = None
    none: bool = False

    def ok(self, v):
        if v is None:
            return self.none
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and \
            (self.lo is None or v >= self.lo) and (self.hi is None or v <= self.hi)

    def __str__(self):
        rng = (f" in [{self.lo}, {self.hi}]" if self.hi is not None else f" >= {self.lo}") if self.lo is not None else ""
        return "an integer" + rng + (" or None" if self.none else "")


@dataclass(frozen=True)
class Real:
    lo: float | None = None
    hi: float | None = None
    hi_open: bool = False

    def ok(self, v):
        return _num(v) and math.isfinite(v) and (self.lo is None or v >= self.lo) and \
            (self.hi is None or (v < self.hi if self.hi_open else v <= self.hi))

    def __str__(self):
        return f"a number in [{self.lo}, {self.hi}{')' if self.hi_open else ']'}"


@dataclass(frozen=True)
class Bool:
    def ok(self, v):
        return isinstance(v, bool)

    def __str__(self):
        return "True or False"


@dataclass(frozen=True)
class Choice:
    options: tuple
    none: bool = False

    def ok(self, v):
        return (v is None and self.none) or (isinstance(v, str) and v in self.options)

    def __str__(self):
        return "one of " + ", ".join(repr(o) for o in self.options) + (" or None" if self.none else "")


@dataclass(frozen=True)
class Pair:
    """A (low, high) pair of finite numbers with low < high, or None."""

    def ok(self, v):
        if v is None:
            return True
        return isinstance(v, (tuple, list)) and len(v) == 2 and all(_num(a) and math.isfinite(a) for a in v) \
            and v[0] < v[1]

    def __str__(self):
        return "a (low, high) pair of numbers or None"


@dataclass(frozen=True)
class Device:
    """None, or a device torch knows (``"cpu"``, ``"cuda:1"``, a torch.device)."""

    def ok(self, v):
        if v is None:
            return True
        import torch

        if not isinstance(v, (str, torch.device)):
            return False
        try:
            torch.device(v)
        except (RuntimeError, ValueError):
            return False
        return True

    def __str__(self):
        return "None or a torch device such as 'cpu' or 'cuda:0'"


@dataclass(frozen=True)
class PathLike:
    """None or a file path (str or os.PathLike)."""

    def ok(self, v):
        import os

        return v is None or (isinstance(v, (str, os.PathLike)) and str(v) != "")

    def __str__(self):
        return "None or a file path"


@dataclass(frozen=True)
class Any:
    def ok(self, v):
        return True

    def __str__(self):
        return "anything"


def check_params(obj, constraints: dict, where: str | None = None) -> None:
    """One-line ValueError for the first parameter of ``obj`` outside its constraint."""
    for name, c in constraints.items():
        v = getattr(obj, name)
        if not c.ok(v):
            shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
            raise ValueError(f"{where + ': ' if where else ''}{type(obj).__name__} parameter {name} must be {c}, "
                             f"got {shown}")


def regular_file(path, what: str, error=ValueError):
    """``path`` if it is a regular file (links to one included); otherwise ``error`` in one
    line saying what it is: missing, a folder, or a device, pipe or socket (reading those
    could hang or never end)."""
    import os
    import stat
    from pathlib import Path

    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except PermissionError:
        raise error(f"{what} {path}: permission denied") from None
    except OSError as e:
        raise error(f"{what} {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise error(f"{what} {path} is a folder, not a file")
    if not stat.S_ISREG(mode):
        kind = "pipe" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
        raise error(f"{what} {path} is a {kind}, not a regular file")
    if not os.access(path, os.R_OK):
        raise error(f"{what} {path}: permission denied")
    return path


def did_you_mean(word: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``word`` (case and
    spaces aside), or ""."""
    import difflib

    choices = list(choices)
    by_key = {c.lower().replace("-", "").replace("_", ""): c for c in choices}
    key = word.strip().lower().replace("-", "").replace("_", "")
    if key in by_key and by_key[key] != word:
        return f" (did you mean {by_key[key]!r}?)"
    close = difflib.get_close_matches(word.strip().lower(), choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
