"""Sets read a piece at a time (folders, npz shards, tar shards) and scored chunk by
chunk: the same rows as a set read whole, and a killed run resumes to the same file."""
import io
import json
import sys
import tarfile

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from oodkit.cli import main
from oodkit.data import DataNotFound, ImageInputError, load_dataset
from oodkit.data.chunks import plan_chunks
from oodkit.data.shards import concat, read_npz_any, read_tar
from oodkit.data.sources import read_folder
from oodkit.pipeline import Flow
from oodkit.scoring import detector_scorer, screen, score_with_detectors
from oodkit.streaming import parts_dir, score_in_chunks

from .test_kill import Proc, _env

RNG = np.random.default_rng(0)
try:  # Parquet output is an extra (`.[parquet]`); the test install lacks it
    import pyarrow  # noqa: F401

    PARQUET = True
except ImportError:
    PARQUET = False


def _png_bytes(a) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _mixed_folder(root, n=23):
    """A class folder of 8x8 images, grey and colour mixed: pixels, labels and order to
    compare against."""
    for i in range(n):
        a = RNG.integers(0, 256, (8, 8, 3) if i % 5 == 0 else (8, 8), dtype=np.uint8)
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / f"c{i % 2}" / f"{i:03d}.png")
    return root


def _tar(path, arrays, labels=None, extra=()):
    with tarfile.open(path, "w") as t:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for i, a in enumerate(arrays):
            add(f"s/{i:04d}.png", _png_bytes(a))
            if labels is not None:
                add(f"s/{i:04d}.cls", str(int(labels[i])).encode())
        for name, data in extra:
            add(name, data)
    return path


def _killed_at_read(chunks, n):
    """``chunks`` whose n-th read (counted over all of them) is a KeyboardInterrupt, and the
    one-item list that counts the reads."""
    read = [0]

    def reads(chunk):
        def f():
            read[0] += 1
            if read[0] == n:
                raise KeyboardInterrupt
            return chunk.read()
        return f

    return [type(c)(c.key, c.start, c.count, reads(c)) for c in chunks], read


def _joined(chunks):
    sets = [c.read() for c in chunks]
    return sets, concat(sets, "joined").images


@pytest.mark.parametrize("size", [1, 4, 23, None])
def test_a_folder_read_in_chunks_equals_it_read_whole(tmp_path, size):
    root = _mixed_folder(tmp_path / "f")
    whole = read_folder(root)
    chunks = plan_chunks(f"folder:{root}", size=size)
    sets, images = _joined(chunks)
    assert [c.start for c in chunks] == list(np.cumsum([0] + [c.count for c in chunks])[:-1])
    # a chunk of grey images alone stays grey (brought to the model's channels, it is the same image)
    np.testing.assert_array_equal(images, whole.images)
    np.testing.assert_array_equal(np.concatenate([s.labels for s in sets]), whole.labels)
    assert sum((s.paths for s in sets), []) == whole.paths


def test_npz_shards_are_counted_from_their_headers_and_read_in_order(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    arrays = [RNG.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8) for n in (5, 1, 7)]
    for i, a in enumerate(arrays):
        np.savez(tmp_path / "d" / f"part{i}.npz", images=a, labels=np.arange(len(a)) + 10 * i)
    (tmp_path / "d" / "notes.txt").write_text("not a shard")
    reads = []
    import oodkit.data.chunks as chunks_module

    real = chunks_module.read_npz
    monkeypatch.setattr(chunks_module, "read_npz", lambda p, name=None: reads.append(p.name) or real(p, name))
    chunks = plan_chunks(f"npz:{tmp_path / 'd'}", size=3)
    assert reads == []  # planning reads headers only
    assert [c.count for c in chunks] == [3, 2, 1, 3, 3, 1]
    sets, images = _joined(chunks)
    assert reads == ["part0.npz", "part1.npz", "part2.npz"]  # a shard cut in pieces is read once
    np.testing.assert_array_equal(images, np.concatenate(arrays))
    np.testing.assert_array_equal(read_npz_any(tmp_path / "d").images, np.concatenate(arrays))
    np.testing.assert_array_equal(load_dataset(f"npz:{tmp_path / 'd'}").labels,
                                  np.concatenate([np.arange(n) + 10 * i for i, n in enumerate((5, 1, 7))]))


def test_webdataset_tar_shards_give_images_labels_and_keys(tmp_path):
    a = RNG.integers(0, 256, (9, 8, 8), dtype=np.uint8)
    (tmp_path / "t").mkdir()
    _tar(tmp_path / "t" / "000.tar", a[:4], labels=np.arange(4), extra=[("s/0001.json", b"{}")])
    _tar(tmp_path / "t" / "001.tar", a[4:], labels=np.arange(4, 9))
    ds = read_tar(tmp_path / "t")
    np.testing.assert_array_equal(ds.images[..., 0], a)
    np.testing.assert_array_equal(ds.labels, np.arange(9))
    assert ds.paths[0].endswith("000.tar/s/0000") and ds.paths[-1].endswith("001.tar/s/0004")
    sets, images = _joined(plan_chunks(f"tar:{tmp_path / 't'}", size=3))
    np.testing.assert_array_equal(images[..., 0], a)
    assert load_dataset(f"tar:{tmp_path / 't' / '001.tar'}").images.shape == (5, 8, 8, 1)


def test_bad_shards_are_refused_in_one_line(tmp_path):
    a = RNG.integers(0, 256, (2, 8, 8), dtype=np.uint8)
    two = _tar(tmp_path / "two.tar", a[:1], extra=[("s/0000.jpg", _png_bytes(a[1]))])
    cls = _tar(tmp_path / "cls.tar", a[:1], extra=[("s/0000.cls", b"cat")])
    (tmp_path / "junk.tar").write_bytes(b"\x00" * 10 + b"not a tar")
    (tmp_path / "empty").mkdir()
    np.savez(tmp_path / "noimg.npz", x=a)
    (tmp_path / "noimgdir").mkdir()
    np.savez(tmp_path / "noimgdir" / "a.npz", x=a)
    cases = [
        (f"tar:{two}", ValueError, "one per key"),
        (f"tar:{cls}", ValueError, "one integer"),
        (f"tar:{tmp_path / 'junk.tar'}", ValueError, "not a tar archive"),
        (f"tar:{tmp_path / 'empty'}", DataNotFound, "no .tar shards"),
        (f"npz:{tmp_path / 'empty'}", DataNotFound, "no .npz shards"),
        (f"npz:{tmp_path / 'noimgdir'}", ValueError, "no 'images' array"),
    ]
    for spec, err, words in cases:
        with pytest.raises(err) as e:
            plan_chunks(spec)[0].read()
        assert words in str(e.value) and "\n" not in str(e.value), (spec, str(e.value))
    bad = tmp_path / "bad.tar"
    _tar(bad, [a[0], RNG.integers(0, 256, (9, 9), dtype=np.uint8)])
    with pytest.raises(ImageInputError, match="differ in size"):
        read_tar(bad)


@pytest.fixture
def detector_file(tmp_path_factory, tiny_models):
    """A fitted fused + loglik detector file on the tiny CDM (digits 0-4)."""
    from oodkit.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("det")
    save_checkpoint(d / "m.pt", tiny_models["cdm"])
    r = CliRunner().invoke(main, ["fit", "--model", str(d / "m.pt"), "--data", "digits-0to4", "--detectors",
                                  "loglik,fused", "--out", str(d / "det.npz"), "--quiet"])
    assert r.exit_code == 0, r.output
    return d / "det.npz"


def _score(args, cwd):
    r = CliRunner().invoke(main, ["score", *args, "--quiet"], catch_exceptions=False)
    return r


def test_chunk_size_and_fdr_do_not_change_a_row(tmp_path, detector_file):
    base = ["--detector", str(detector_file), "--data", "digits-5to9", "--fdr", "0.2", "--batch-size", "5"]
    for size in ("7", "10000"):  # 7 is rounded up to 10, two batches
        r = _score([*base, "--chunk", size, "--out", str(tmp_path / f"{size}.csv")], tmp_path)
        assert r.exit_code == 0, r.output
    assert (tmp_path / "7.csv").read_bytes() == (tmp_path / "10000.csv").read_bytes()
    assert not parts_dir(tmp_path / "7.csv").exists()
    api = score_with_detectors(detector_file, "digits-5to9", fdr=0.2, batch_size=5)
    got = pd.read_csv(tmp_path / "7.csv")
    assert list(got.columns) == list(api.columns)
    pd.testing.assert_frame_equal(got, api, check_exact=True, check_dtype=False)
    assert got["fused_flagged"].any() and not got["fused_flagged"].all()


def test_a_run_that_stopped_resumes_where_it_stopped(tmp_path, detector_file, monkeypatch):
    scorer = detector_scorer(detector_file)
    out, full = tmp_path / "s.csv", tmp_path / "full.csv"
    score_in_chunks(scorer, plan_chunks("digits-5to9", size=50), full)
    chunks = plan_chunks("digits-5to9", size=50)
    crashing, read = _killed_at_read(chunks, 4)
    with pytest.raises(KeyboardInterrupt):
        score_in_chunks(scorer, crashing, out)
    assert sorted(p.name for p in parts_dir(out).iterdir()) == ["000000.csv", "000001.csv", "000002.csv",
                                                                "manifest.json"]
    read[0] = -100  # counts the reads of the resumed run
    n, _ = score_in_chunks(scorer, crashing, out)
    assert read[0] == -100 + len(chunks) - 3 and n == 299
    assert out.read_bytes() == full.read_bytes() and not parts_dir(out).exists()


def test_parts_of_another_command_are_refused_not_mixed_in(tmp_path, detector_file):
    out = tmp_path / "s.csv"
    args = ["score", "--detector", str(detector_file), "--data", "digits-5to9", "--out", str(out), "--quiet"]
    parts_dir(out).mkdir()
    (parts_dir(out) / "manifest.json").write_text(json.dumps({"format": 1, "identity": {}, "chunks": []}))
    (parts_dir(out) / "000000.csv").write_text("index\n0\n")
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "unfinished scores of another command" in r.output
    assert len(r.output.strip().splitlines()) == 1
    # a folder with no scores in it binds nothing: the next command starts over
    (parts_dir(out) / "000000.csv").unlink()
    assert CliRunner().invoke(main, args).exit_code == 0 and out.is_file() and not parts_dir(out).exists()


def test_a_file_where_the_parts_folder_goes_is_refused_in_one_line(tmp_path, detector_file):
    (tmp_path / "s.csv.parts").write_text("mine")
    r = CliRunner().invoke(main, ["score", "--detector", str(detector_file), "--data", "digits-5to9", "--out",
                                  str(tmp_path / "s.csv"), "--quiet"])
    assert r.exit_code == 2 and "s.csv.parts is in the way" in r.output and len(r.output.strip().splitlines()) == 1
    assert (tmp_path / "s.csv.parts").read_text() == "mine"


def test_a_run_that_fails_before_its_first_chunk_leaves_nothing_behind(tmp_path, detector_file, monkeypatch):
    chunks = plan_chunks("digits-5to9", size=100)
    broken = [type(c)(c.key, c.start, c.count, lambda: (_ for _ in ()).throw(ValueError("bad image"))) for c in chunks]
    with pytest.raises(ValueError, match="bad image"):
        score_in_chunks(detector_scorer(detector_file), broken, tmp_path / "s.csv")
    assert list(tmp_path.iterdir()) == []


def test_parquet_output_holds_the_csv_rows(tmp_path, detector_file):
    pytest.importorskip("pyarrow")
    for name in ("s.csv", "s.parquet"):
        r = _score(["--detector", str(detector_file), "--data", "digits-5to9", "--chunk", "40", "--out",
                    str(tmp_path / name)], tmp_path)
        assert r.exit_code == 0, r.output
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "s.parquet"), pd.read_csv(tmp_path / "s.csv"),
                                  check_exact=True)


def test_parquet_without_pyarrow_is_refused_before_any_work(tmp_path, detector_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    r = CliRunner().invoke(main, ["score", "--detector", str(detector_file), "--data", "digits-5to9", "--out",
                                  str(tmp_path / "s.parquet"), "--quiet"])
    assert r.exit_code == 2 and "pip install pyarrow" in r.output and not parts_dir(tmp_path / "s.parquet").exists()


def test_a_killed_score_resumes_to_the_file_of_an_uninterrupted_run(tmp_path, detector_file):
    """SIGKILL once some chunks are written; the same command then skips them and writes
    the file an uninterrupted run writes, byte for byte."""
    env = _env(tmp_path)
    args = ["score", "--detector", str(detector_file), "--data", "digits-5to9", "--chunk", "5", "--batch-size",
            "5", "--quiet"]
    # the uninterrupted run in this process (the subprocesses get its thread count: the same floats)
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "full.csv")])
    assert r.exit_code == 0, r.output
    first = Proc([*args, "--out", "s.csv"], tmp_path, env, "first")
    parts = parts_dir(tmp_path / "s.csv")
    assert first.wait_for(lambda: (parts / "000003.csv").exists()), first.text()
    first.kill()
    assert first.killed and not (tmp_path / "s.csv").exists()
    written = len(list(parts.glob("*.csv")))
    second = Proc([*args, "--out", "s.csv"], tmp_path, env, "second")
    assert second.finish() == 0, second.text()
    assert "resuming" in second.stderr() and 4 <= written < 60
    assert (tmp_path / "s.csv").read_bytes() == (tmp_path / "full.csv").read_bytes()
    assert not parts.exists()


def test_screening_chunk_by_chunk_equals_screening_the_whole_frame(detector_file, tmp_path):
    scorer = detector_scorer(detector_file)
    whole = screen(scorer.frame(Flow(), load_dataset("digits-5to9")), 0.3)
    score_in_chunks(scorer, plan_chunks("digits-5to9", size=13), tmp_path / "s.csv", fdr=0.3)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "s.csv"), whole, check_exact=True, check_dtype=False)


def test_a_pipe_given_as_a_shard_is_refused_not_read(tmp_path):
    """Opening a FIFO would wait for a writer forever: a pipe named as a shard, or lying
    among the shards of a folder, is one line saying what it is."""
    import os

    os.mkfifo(tmp_path / "p.tar")
    with pytest.raises(ValueError, match=r"p\.tar is a pipe, not a regular file"):
        plan_chunks(f"tar:{tmp_path / 'p.tar'}")
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "d" / "a.npz")
    with pytest.raises(ValueError, match=r"a\.npz is a pipe, not a regular file"):
        plan_chunks(f"npz:{tmp_path / 'd'}")
    (tmp_path / "t").mkdir()
    os.mkfifo(tmp_path / "t" / "a.tar")
    with pytest.raises(ValueError, match=r"a\.tar is a pipe, not a regular file"):
        plan_chunks(f"tar:{tmp_path / 't'}")


def _rewrite(kind, root, a):
    """Data set ``kind`` written under ``root`` from pixels ``a`` (N, 8, 8): its spec."""
    if kind == "npz-file":
        np.savez(root / "set.npz", images=a)
        return f"npz:{root / 'set.npz'}"
    if kind == "npz-shards":
        (root / "shards").mkdir(exist_ok=True)
        for i in range(0, len(a), 10):
            np.savez(root / "shards" / f"{i:03d}.npz", images=a[i:i + 10])
        return f"npz:{root / 'shards'}"
    if kind == "tar":
        return f"tar:{_tar(root / 'set.tar', a)}"
    (root / "imgs").mkdir(exist_ok=True)
    for i, img in enumerate(a):
        Image.fromarray(img).save(root / "imgs" / f"{i:03d}.png")
    return f"folder:{root / 'imgs'}"


@pytest.mark.parametrize("kind", ["npz-file", "npz-shards", "tar", "folder"])
def test_data_that_changed_since_a_killed_run_is_refused_not_mixed_in(tmp_path, detector_file, kind):
    """The audit of 2026-12-04: a killed `score`, its npz rewritten with other images of
    the same shape, resumed into rows of the old images and the new (exit 0)."""
    import os

    scorer = detector_scorer(detector_file)
    a = RNG.integers(0, 256, (30, 8, 8), dtype=np.uint8)
    spec = _rewrite(kind, tmp_path, a)
    out = tmp_path / "s.csv"

    with pytest.raises(KeyboardInterrupt):
        score_in_chunks(scorer, _killed_at_read(plan_chunks(spec, size=10), 2)[0], out)
    assert (parts_dir(out) / "000000.csv").is_file()
    _rewrite(kind, tmp_path, 255 - a)  # the same names, shapes and sizes; other pixels
    for p in tmp_path.rglob("*"):  # a later write, whatever the clock's granularity
        if p.is_file() and p.suffix in (".npz", ".tar", ".png"):
            st = p.stat()
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(ValueError, match="data that has changed"):
        score_in_chunks(scorer, plan_chunks(spec, size=10), out)


def test_a_truncated_tar_shard_is_refused_not_scored_in_part(tmp_path):
    """The audit of 2026-12-04: half a tar shard gave 55 of its 100 images, rc 0; cut at
    a member boundary, 50. Python's tarfile stops at a damaged header without a word."""
    import gzip

    whole = _tar(tmp_path / "whole.tar", RNG.integers(0, 256, (20, 8, 8), dtype=np.uint8)).read_bytes()
    with tarfile.open(tmp_path / "whole.tar") as t:
        boundary = t.getmembers()[10].offset  # the header of the 11th image
    cuts = {"half": len(whole) // 2, "boundary": boundary, "inside-a-header": boundary + 100,
            "no-end-marker": t.offset}
    for name, cut in cuts.items():
        (tmp_path / f"{name}.tar").write_bytes(whole[:cut])
        with pytest.raises(ValueError, match="truncated") as e:
            plan_chunks(f"tar:{tmp_path / f'{name}.tar'}")[0].read()
        assert "\n" not in str(e.value) and f"{name}.tar" in str(e.value), (name, str(e.value))
    gz = gzip.compress(whole)
    (tmp_path / "cut.tar.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(ValueError, match="truncated"):
        plan_chunks(f"tar:{tmp_path / 'cut.tar.gz'}")[0].read()
    (tmp_path / "one-end-block.tar").write_bytes(whole[: t.offset + 512])  # one zero block: tar itself reads it
    assert plan_chunks(f"tar:{tmp_path / 'one-end-block.tar'}")[0].read().images.shape == (20, 8, 8, 1)


@pytest.mark.parametrize("name", ["s.npz", "s", "s.txt"])
def test_a_score_output_that_is_not_a_table_is_refused_before_any_work(tmp_path, detector_file, name):
    """The audit of 2026-12-04: `--out s.npz` wrote CSV text under that name."""
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        score_in_chunks(detector_scorer(detector_file), plan_chunks("digits-5to9"), tmp_path / name)
    assert not list(tmp_path.iterdir())


def test_a_bad_image_in_a_tar_shard_is_named_without_a_buffer_address(tmp_path):
    """The audit of 2026-12-04: `cannot identify image file <_io.BytesIO object at 0x...>`."""
    bad = _tar(tmp_path / "bad.tar", RNG.integers(0, 256, (2, 8, 8), dtype=np.uint8), extra=[("s/0009.png", b"junk")])
    with pytest.raises(ImageInputError) as e:
        read_tar(bad)
    assert "bad.tar/s/0009.png" in str(e.value) and "BytesIO" not in str(e.value) and "0x" not in str(e.value)


def test_a_tar_path_ending_in_brackets_is_a_path_not_a_class_subset(tmp_path):
    """`npz:` and `folder:` paths were exempt from NAME[0-5] class parsing; `tar:` was not,
    so `tar:shards[1]` read as classes [1] of a file `shards` that does not exist."""
    from oodkit.data.registry import PATH_KINDS, parse_classes

    arrays = RNG.integers(0, 256, (6, 8, 8), dtype=np.uint8)
    _tar(tmp_path / "shards[1]", arrays)
    ds = load_dataset(f"tar:{tmp_path / 'shards[1]'}", "test")
    np.testing.assert_array_equal(ds.images, arrays[..., None])
    for kind in PATH_KINDS:
        assert parse_classes(f"{kind}:x[1]") == (f"{kind}:x[1]", None)


def test_statistics_that_changed_since_a_killed_run_are_refused_not_mixed_in(tmp_path, tiny_models):
    """Audit 4: `score --model M --fit-data npz:F` killed, F rewritten, the same command
    resumed and joined rows scored against two fits (two thresholds in one column). A
    resume now also checks what the detectors learned, wherever it came from."""
    from oodkit.checkpoint import save_checkpoint
    from oodkit.scoring import model_scorer

    save_checkpoint(tmp_path / "m.pt", tiny_models["cdm"])
    x = load_dataset("digits-0to4", "train").images
    np.savez(tmp_path / "fit.npz", images=x[:300])
    out = tmp_path / "s.csv"
    scorer = model_scorer(tmp_path / "m.pt", f"npz:{tmp_path / 'fit.npz'}")
    with pytest.raises(KeyboardInterrupt):
        score_in_chunks(scorer, _killed_at_read(plan_chunks("digits-5to9", size=100), 2)[0], out)
    np.savez(tmp_path / "fit.npz", images=x[300:600])
    scorer = model_scorer(tmp_path / "m.pt", f"npz:{tmp_path / 'fit.npz'}")
    with pytest.raises(ValueError, match="unfinished scores of another command"):
        score_in_chunks(scorer, plan_chunks("digits-5to9", size=100), out)
    np.savez(tmp_path / "fit.npz", images=x[:300])  # the same statistics again: the run resumes
    scorer = model_scorer(tmp_path / "m.pt", f"npz:{tmp_path / 'fit.npz'}")
    assert score_in_chunks(scorer, plan_chunks("digits-5to9", size=100), out)[0] == 299


def test_a_data_error_mid_run_says_where_the_scored_chunks_are_kept(tmp_path, detector_file):
    """Audit 4: a chunked run stopped by an image of another size said to pass --resize;
    doing so was then refused because of the parts the failed run had kept. The first
    error now names that folder too."""
    a = RNG.integers(0, 256, (30, 8, 8), dtype=np.uint8)
    (tmp_path / "imgs").mkdir()
    for i, img in enumerate(a):
        Image.fromarray(img if i != 25 else np.zeros((16, 16), np.uint8)).save(tmp_path / "imgs" / f"{i:03d}.png")
    args = ["--detector", str(detector_file), "--data", f"folder:{tmp_path / 'imgs'}", "--out", str(tmp_path / "s.csv"),
            "--chunk", "10", "--batch-size", "5"]
    r = CliRunner().invoke(main, ["score", *args, "--quiet"])
    assert r.exit_code == 2 and "differ in size" in r.output and "chunks kept in" in r.output, r.output
    assert len([ln for ln in r.output.splitlines() if ln.startswith("Error")]) == 1


@pytest.mark.parametrize("kind", ["npz", "tar", "tar-in-one"])
def test_shards_with_and_without_labels_are_refused_before_scoring(tmp_path, detector_file, kind):
    """Scored in chunks, a shard with labels beside one without shifted every later column
    of the CSV by one (the bpd under 'label', exit 0) and broke Parquet with a pyarrow
    traceback; one tar shard cut in chunks could do the same. Read whole it was refused."""
    a = RNG.integers(0, 256, (12, 8, 8), dtype=np.uint8)
    d = tmp_path / "mixed"
    d.mkdir()
    if kind == "npz":
        np.savez(d / "a.npz", images=a[:6], labels=np.zeros(6, int))
        np.savez(d / "b.npz", images=a[6:])
    elif kind == "tar":
        _tar(d / "a.tar", a[:6], labels=np.zeros(6, int))
        _tar(d / "b.tar", a[6:])
    else:
        _tar(d / "a.tar", a[:6], extra=[(f"s/{i:04d}.png", _png_bytes(a[i])) for i in range(6, 12)] +
             [(f"s/{i:04d}.cls", b"1") for i in range(6, 12)])
    spec = f"{kind[:3]}:{d}"
    with pytest.raises(ValueError, match="some .* have labels and some do not"):
        plan_chunks(spec, size=4)
    for out in ("s.csv", "s.parquet") if PARQUET else ("s.csv",):
        r = CliRunner().invoke(main, ["score", "--detector", str(detector_file), "--data", spec, "--chunk", "4",
                                      "--out", str(tmp_path / out), "--quiet"])
        assert r.exit_code != 0 and "have labels and some do not" in r.output and "Traceback" not in r.output, \
            r.output
        assert not (tmp_path / out).exists()


def test_npz_shards_of_two_image_sizes_are_refused_before_scoring(tmp_path, detector_file):
    """Scored in chunks, a folder of 32x32 RGB and 8x8 grey shards was scored as one set
    (each chunk resized on its own); read whole, fit refused it. The headers say it first."""
    d = tmp_path / "sizes"
    d.mkdir()
    np.savez(d / "a.npz", images=RNG.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    np.savez(d / "b.npz", images=RNG.integers(0, 256, (4, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="differ in image size"):
        plan_chunks(f"npz:{d}")
    r = CliRunner().invoke(main, ["score", "--detector", str(detector_file), "--data", f"npz:{d}", "--out",
                                  str(tmp_path / "s.csv"), "--quiet"])
    assert r.exit_code == 2 and "differ in image size" in r.output and not (tmp_path / "s.csv").exists(), r.output


def test_tar_members_that_would_score_another_image_are_refused(tmp_path, monkeypatch):
    """A link member named like an image made its row score the image it points to (and a
    name given twice read the last member); a .cls without an image was dropped; a small
    compressed member could expand to gigabytes before a decoder saw it; a .cls of 23
    digits became -2**63."""
    import oodkit.data.shards as shards

    a = RNG.integers(0, 256, (3, 8, 8), dtype=np.uint8)

    def shard(name, extra):
        with tarfile.open(tmp_path / name, "w") as t:
            for i in range(2):
                info = tarfile.TarInfo(f"{i:04d}.png")
                data = _png_bytes(a[i])
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            for info, data in extra:
                t.addfile(info, io.BytesIO(data) if data is not None else None)
        return f"tar:{tmp_path / name}"

    def member(name, data=None, kind=tarfile.REGTYPE, link=""):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        info.size = len(data) if data is not None else 0
        return info, data

    cases = [(member("0000.png", kind=tarfile.SYMTYPE, link="0001.png"), "is a link"),
             (member("0001.png", kind=tarfile.LNKTYPE, link="0000.png"), "is a link"),
             (member("0001.png", _png_bytes(a[2])), "appears twice"),
             (member("0009.cls", b"3"), "has a label (0009.cls) and no image"),
             ([member("0000.cls", b"1"), member("0001.cls", b"99999999999999999999999")], "fit in 64 bits")]
    for i, (extra, words) in enumerate(cases):
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            read_tar(shard(f"c{i}.tar", extra if isinstance(extra, list) else [extra])[4:])
    monkeypatch.setitem(shards.MAX_MEMBER_BYTES, "image", 50)
    with pytest.raises(ValueError, match="more than a sample's 50"):
        plan_chunks(shard("big.tar", []))


def test_a_path_a_spreadsheet_would_run_is_written_inert(tmp_path, detector_file, monkeypatch):
    """Files named =1+2.png, +cmd.png, -2+3.png or @SUM(A1).png gave CSV cells that a
    spreadsheet runs as formulas; Parquet keeps the names as they are."""
    d = tmp_path / "fx"
    d.mkdir()
    names = ["=1+2.png", "+cmd.png", "-2+3.png", "@SUM(A1).png", "plain.png"]
    for n in names:
        Image.fromarray(RNG.integers(0, 256, (8, 8), dtype=np.uint8)).save(d / n)
    monkeypatch.chdir(d)  # folder:. gives the bare names
    for out in ("s.csv", "s.parquet") if PARQUET else ("s.csv",):
        r = CliRunner().invoke(main, ["score", "--detector", str(detector_file), "--data", "folder:.", "--out",
                                      str(tmp_path / out), "--quiet"])
        assert r.exit_code == 0, r.output
    paths = pd.read_csv(tmp_path / "s.csv")["path"].tolist()
    assert all(not p.startswith(("=", "+", "-", "@")) for p in paths) and "'=1+2.png" in paths, paths
    assert "plain.png" in paths
    if PARQUET:
        assert sorted(pd.read_parquet(tmp_path / "s.parquet")["path"]) == sorted(names)
