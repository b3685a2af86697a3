"""Scoring a data set chunk by chunk, written as it goes and resumed after a kill.

``score_in_chunks`` reads one chunk (:mod:`oodkit.data.shards`) at a time, scores it
through a fresh :class:`~oodkit.pipeline.Flow` (one forward pass, then the memory is
let go) and writes its rows to ``OUT.parts/NNNNNN.csv`` at once, atomically. The
``manifest.json`` there records what the scores depend on (detector or model file by
SHA-256, data spec, split, resize, every chunk's key and size); the same command started
again after a kill finds it, skips the chunks already written and scores the rest. A
different command, or data that changed, is refused in one line rather than mixed in.
When every chunk is done the parts are joined in order into ``OUT`` (CSV, or Parquet for
a ``.parquet`` name, one row group per chunk) and the folder is removed. A
Benjamini-Hochberg screen (``fdr``) needs every p-value, so it is applied while joining.

Under ``torchrun`` the processes score different chunks, one each per round (reading and
decoding included), and send their rows to rank 0, which writes them.
"""
from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .atomic import atomic_path, atomic_write
from .distributed import barrier, gather_to_root, rank_world
from .pipeline import Flow

__all__ = ["score_in_chunks", "write_table", "check_format", "parts_dir"]


def parts_dir(out) -> Path:
    """Where the rows of each finished chunk of a run writing ``out`` are kept."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _manifest(identity: dict, chunks: list) -> dict:
    return {"format": 1, "identity": identity, "chunks": [[c.key, c.start, c.count] for c in chunks]}


def _done(parts: Path, manifest: dict) -> set:
    """Indices of the chunks a killed run of the same command already wrote."""
    if parts.exists() and not parts.is_dir():
        raise ValueError(f"{parts} is in the way: scores are kept in a folder of that name while they are written; "
                         "move that file or write to another --out")
    found = parts / "manifest.json"
    if not found.is_file():
        return set()
    try:
        old = json.loads(found.read_text())
    except (OSError, ValueError):
        old = None
    written = sorted(parts.glob("[0-9]*.csv"))
    if old != json.loads(json.dumps(manifest)):
        if not written:  # nothing scored yet: nothing to lose by starting over
            return set()
        raise ValueError(f"{parts} holds the unfinished scores of another command or of data that has changed "
                         "since: remove that folder to start over, or write to another --out")
    return {i for i in range(len(manifest["chunks"])) if (parts / f"{i:06d}.csv").is_file()}


def _drop_if_empty(parts: Path) -> None:
    """Remove a parts folder that holds no scores (a run that failed before its first
    chunk leaves nothing to resume, and must not bind the next command to its manifest)."""
    if parts.is_dir() and not any(parts.glob("[0-9]*.csv")):
        shutil.rmtree(parts, ignore_errors=True)


def _read_part(path: Path) -> pd.DataFrame:
    """A part as written, every cell the text ``to_csv`` wrote: joined into a CSV it is
    byte for byte the file of the frame written whole (no float is parsed and printed
    again); :func:`_typed` gives Parquet its types."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells back to the types ``to_csv`` wrote them from: bool, int64, float64
    (Python's correctly rounded ``float``, so every float is the one written), else text."""
    out = {}
    for c in frame.columns:
        col = frame[c].to_numpy()
        if set(col) <= {"True", "False"}:
            out[c] = col == "True"
            continue
        for cast in (lambda v: np.array(v, dtype=np.int64),
                     lambda v: np.array([float(x) if x else np.nan for x in v], dtype=np.float64)):
            try:
                out[c] = cast(col)
                break
            except (ValueError, OverflowError):
                continue
        else:
            out[c] = col
    return pd.DataFrame(out)


def score_in_chunks(scorer, chunks: list, out, batch_size: int = 256, device=None, fdr: float | None = None,
                    progress: bool = False, echo=None, precision: str = "fp32"):
    """Score ``chunks`` (:func:`~oodkit.data.chunks.plan_chunks`) with ``scorer``
    (:class:`~oodkit.scoring.Scorer`) into ``out``, resuming a killed run of the same
    command (module docstring). Returns the number of rows and the columns written
    (rank 0; other processes get no columns). ``echo``: called with a line when a run
    resumes. ``precision``: the arithmetic of the forward passes (``Flow.precision``)."""
    out = Path(out)
    check_format(out)
    total = sum(c.count for c in chunks)
    if not total:
        raise ValueError("no images to score")
    parts = parts_dir(out)
    manifest = _manifest({**scorer.identity, "fdr": fdr, "precision": precision}, chunks)
    done = _done(parts, manifest)
    rank, _ = rank_world()
    if done and echo is not None and rank == 0:
        echo(f"resuming: {len(done)} of {len(chunks)} chunks already scored in {parts}")
    barrier()  # every process has seen what was done before rank 0 writes anything
    if rank == 0:
        parts.mkdir(exist_ok=True)
        atomic_write(parts / "manifest.json", json.dumps(manifest, indent=1).encode())
    try:
        # a fresh flow per chunk (its forward pass is let go with the chunk), running every batch of the
        # chunk in this process: under torchrun the processes score different chunks
        new_flow = functools.partial(Flow, batch_size, device, precision=precision, shard=False)
        _score_missing(scorer, chunks, done, parts, new_flow, progress and rank == 0, rank)
    except ValueError as e:  # bad data or settings: what the user changes next also changes the command
        if rank == 0:
            _drop_if_empty(parts)
        kept = len(list(parts.glob("[0-9]*.csv"))) if parts.is_dir() else 0
        if not kept:
            raise
        first, *rest = str(e).split("\n", 1)  # the note goes on the line a one-line error shows
        note = (f"{first} ({kept} scored chunk{'s' if kept > 1 else ''} kept in {parts} for a rerun of this same "
                "command; remove the folder before changing an option)")
        try:
            again = type(e)("\n".join([note, *rest]))
        except TypeError:  # a ValueError subclass with other arguments (UnicodeDecodeError): as it was
            raise e from None
        raise again.with_traceback(e.__traceback__) from None
    except BaseException:
        if rank == 0:
            _drop_if_empty(parts)
        raise
    barrier()
    columns = []
    if rank == 0:
        columns = _join(parts, len(chunks), out, fdr)
        shutil.rmtree(parts)
    return total, columns


def _score_missing(scorer, chunks, done, parts, new_flow, progress, rank) -> None:
    """Score the chunks not in ``done``. Under torchrun the processes take one chunk each
    per round (reading, decoding and scoring it alone: a chunk is whole batches, so its
    numbers are those of a one-process run) and rank 0 writes every process's rows."""
    _, world = rank_world()
    todo = [i for i in range(len(chunks)) if i not in done]
    with tqdm(total=sum(c.count for c in chunks), initial=sum(chunks[i].count for i in done), unit="img",
              desc="score", disable=not progress, dynamic_ncols=True) as bar:
        for first in range(0, len(todo), world):
            mine = todo[first + rank] if first + rank < len(todo) else None
            rows = None if mine is None else _score_chunk(scorer, chunks[mine], new_flow())
            for i, text in gather_to_root((mine, rows)):
                if i is not None:
                    atomic_write(parts / f"{i:06d}.csv", text.encode())
                    bar.update(chunks[i].count)


def _score_chunk(scorer, chunk, flow: Flow) -> str:
    """One chunk's rows as CSV text."""
    ds = chunk.read()
    if len(ds) != chunk.count:
        raise ValueError(f"{chunk.key}: {len(ds)} images where {chunk.count} were counted: the data changed while "
                         "it was being scored")
    return scorer.frame(flow, ds, chunk.start).to_csv(index=False)


def _join(parts: Path, n: int, out: Path, fdr: float | None) -> list:
    """The parts joined in order into ``out``, with the BH screen over all of them; the
    columns written."""
    flagged = {}
    if fdr is not None:
        from .conformal import bh_screen

        cols = {}
        for i in range(n):
            head = pd.read_csv(parts / f"{i:06d}.csv", nrows=0).columns
            frame = _typed(pd.read_csv(parts / f"{i:06d}.csv", dtype=str, keep_default_na=False,
                                       usecols=[c for c in head if c.endswith("_pvalue")]))
            for c in frame.columns:
                cols.setdefault(c, []).append(frame[c].to_numpy())
        flagged = {c: bh_screen(np.concatenate(v), fdr) for c, v in cols.items()}
    columns = []
    frames = _with_flags((_read_part(parts / f"{i:06d}.csv") for i in range(n)), flagged, columns)
    write_table(frames, out, text=True)
    return columns


def _with_flags(frames, flagged: dict, columns: list):
    """The parts with their ``_flagged`` columns; ``columns`` becomes the columns written."""
    start = 0
    for frame in _same_columns(frames):
        for col, mask in flagged.items():
            frame[col.removesuffix("_pvalue") + "_flagged"] = np.where(mask[start : start + len(frame)], "True",
                                                                         "False")
        start += len(frame)
        columns[:] = list(frame.columns)
        yield frame


def _same_columns(frames):
    """The parts, refused at the first whose columns differ from the first part's: a row
    under another part's header would be a wrong answer."""
    first = None
    for frame in frames:
        first = list(frame.columns) if first is None else first
        if list(frame.columns) != first:
            raise ValueError(f"the scored chunks have different columns ({', '.join(first)} against "
                             f"{', '.join(frame.columns)}): the data's parts differ in what they hold")
        yield frame


def write_table(frames, out, text: bool = False) -> None:
    """DataFrames (one, or an iterable of pieces with the same columns) written in order
    to ``out`` atomically: Parquet for a ``.parquet`` name (pyarrow, one row group per
    piece), CSV otherwise. Memory holds one piece at a time. ``text``: the cells are the
    text of a CSV (:func:`_read_part`), typed again for Parquet."""
    out = Path(out)
    check_format(out)
    frames = iter([frames] if isinstance(frames, pd.DataFrame) else frames)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".parquet":
            _parquet((_typed(f) for f in frames) if text else frames, tmp)
        else:
            with open(tmp, "w", newline="") as f:
                for k, frame in enumerate(frames):
                    _inert(frame).to_csv(f, index=False, header=k == 0)


TABLE_SUFFIXES = (".csv", ".parquet")
# what a spreadsheet reads as the start of a formula (OWASP, CSV injection)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with each ``path`` that a spreadsheet would run as a formula (a file named
    ``=cmd.png``) written after a ``'``, which spreadsheets show and do not run; Parquet
    keeps paths as they are."""
    if "path" not in frame.columns:
        return frame
    paths = frame["path"].astype(str)
    risky = paths.str.startswith(FORMULA_STARTS)
    if not risky.any():
        return frame
    return frame.assign(path=paths.where(~risky, "'" + paths))


def check_format(out) -> None:
    """Refuse, before any work, an output whose format cannot be written here."""
    if Path(out).suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"{out}: scores are written as a table: name a .csv or .parquet file")
    if Path(out).suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ValueError(f"{out}: a .parquet output needs pyarrow: pip install pyarrow (or write a .csv)") \
                from None


def _parquet(frames, tmp) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for frame in frames:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()
