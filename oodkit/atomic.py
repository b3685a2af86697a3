"""Files written whole or not at all, through a temporary file beside the target and a
rename: a killed writer leaves the old file or the new one, never a part. SIGTERM during
a write still removes the temporary file; the temporaries a SIGKILLed writer leaves (no
handler runs on SIGKILL; its pid is in their name) are removed by the next write to the
same path. Checkpoints, detector files, results and downloads all go through here."""
from __future__ import annotations

import glob
import os
import re
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write", "umask", "output_lock", "OutputBusy"]


class OutputBusy(ValueError):
    """Another live oodkit process holds the lock of an output."""


@contextmanager
def output_lock(path, what: str = "output"):
    """Hold ``path``'s lock while a run writes it, so that two runs on one output refuse
    in one line instead of overwriting each other. The lock is an ``flock`` on
    ``.NAME.lock`` beside the output: the kernel releases it when its process ends, so a
    killed run never leaves a lock that blocks the next one. The file holds the pid for
    the message and is removed by its holder."""
    import fcntl

    path = Path(path)
    lock = path.parent / f".{path.name}.lock"
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as e:  # a read-only folder, a full disk: about the output, not its lock
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OutputBusy(f"another oodkit run (pid {pid}) is writing {what} {path}: wait for it to finish") \
                from None
        try:  # the holder before us may have removed the file after we opened it: lock the file that is there
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield path
    finally:
        try:
            os.unlink(lock)  # while still holding it: a waiter then re-opens a fresh file
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def atomic_path(path):
    """``with atomic_path(path) as tmp: write(tmp)``: ``tmp`` (a str in ``path``'s folder)
    replaces ``path`` when the block ends without an exception and is removed otherwise.
    The file gets the mode an ordinary ``open`` would give (0666 less the umask)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name")
    remove_stale_temps(path)
    with _TermCleansUp():
        tmp = None
        try:
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
                os.close(fd)
                yield tmp
                os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600
                os.replace(tmp, path)
            except OSError as e:  # name the file the user asked for, not the temporary one
                raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        finally:  # also on KeyboardInterrupt, SystemExit and (see _TermCleansUp) SIGTERM
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)


def atomic_write(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def remove_stale_temps(path: Path) -> None:
    """Remove the temporaries beside ``path`` whose writing process is gone. The name is
    matched literally (``cifar10[0-5]`` holds brackets) and in full, so that another
    file's temporaries (``.x.pt.500.pt.<pid>....tmp`` beside ``x.pt``) are not taken for
    this one's."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[^.]+\.tmp")
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        m = pattern.fullmatch(tmp.name)
        if m is None:
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except (ProcessLookupError, OverflowError):
            tmp.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, someone else's


def umask() -> int:
    """The process umask, read without changing it where the platform allows (changing
    it, even briefly, races with other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _Terminated(BaseException):
    pass


class _TermCleansUp:
    """While a file is written, make SIGTERM (whose default action kills the process
    without running ``finally`` blocks) raise instead, so the temporary file is removed;
    the signal is then re-raised with its default action. Only in the main thread and
    only where SIGTERM has its default action (a caller's own handler is left alone)."""

    def __enter__(self):
        self.prev = None
        if threading.current_thread() is threading.main_thread():
            try:
                if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                    self.prev = signal.signal(signal.SIGTERM, self._raise)
            except (ValueError, OSError):  # no signals here (embedded interpreter)
                self.prev = None
        return self

    @staticmethod
    def _raise(signum, frame):
        raise _Terminated

    def __exit__(self, exc_type, exc, tb):
        if self.prev is not None:
            signal.signal(signal.SIGTERM, self.prev)
            if exc_type is _Terminated:
                signal.raise_signal(signal.SIGTERM)  # die as SIGTERM would have
        return False
