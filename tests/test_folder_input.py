"""The ``folder:PATH`` source: open-file use, pixel modes, mixed sizes, bad files, paths."""
import multiprocessing
import resource
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from oodkit.cli import main
from oodkit.data import DataNotFound, ImageInputError, ImageSet, load_dataset
from oodkit.data.sources import read_folder

RNG = np.random.default_rng(0)


def _png(path, array, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def _one_line(e):
    return "\n" not in str(e.value).strip()


def test_thousands_of_files_load_under_a_low_open_file_limit(tmp_path):
    arr = RNG.integers(0, 256, (3000, 8, 8), dtype=np.uint8)
    for i, a in enumerate(arr):
        _png(tmp_path / "many" / f"{i:05d}.png", a)
    code = textwrap.dedent(f"""
        import numpy as np
        from oodkit.data.sources import read_folder
        ds = read_folder({str(tmp_path / "many")!r})
        assert ds.images.shape == (3000, 8, 8, 1), ds.images.shape
        np.save({str(tmp_path / "out.npy")!r}, ds.images[..., 0])
    """)
    limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))  # noqa: E731
    r = subprocess.run([sys.executable, "-c", code], preexec_fn=limit, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), arr)


def test_16bit_grey_scales_to_8bit(tmp_path):
    v16 = np.array([[0, 257 * 10], [257 * 128, 65535]], np.uint16)  # v >> 8 == round(v / 257) here
    _png(tmp_path / "a" / "g16.png", v16)
    assert Image.open(tmp_path / "a" / "g16.png").mode == "I;16"
    ds = read_folder(tmp_path / "a")
    assert ds.images.shape == (1, 2, 2, 1)
    np.testing.assert_array_equal(ds.images[0, ..., 0], [[0, 10], [128, 255]])
    # 32-bit integer ("I") TIFFs were read as 16-bit too, which made 8-bit data in them black
    # (the audit of 2026-12-04): they are refused now (tests/test_data.py)
    Image.fromarray(v16.astype(np.int32)).save(tmp_path / "b.tif")
    (tmp_path / "b").mkdir()
    (tmp_path / "b.tif").rename(tmp_path / "b" / "g.tif")
    assert Image.open(tmp_path / "b" / "g.tif").mode == "I"
    with pytest.raises(ImageInputError, match="no fixed range"):
        read_folder(tmp_path / "b")


def test_palette_images_keep_their_colours(tmp_path):
    colours = np.array([[255, 0, 0], [0, 128, 0], [0, 0, 255], [200, 200, 10]], np.uint8)
    idx = np.array([[0, 1], [2, 3]], np.uint8)
    p = Image.fromarray(idx, mode="P")
    p.putpalette(colours.ravel().tolist())
    (tmp_path / "pal").mkdir()
    p.save(tmp_path / "pal" / "p.png")
    p.save(tmp_path / "pal" / "q.png", transparency=0)  # a transparent entry: colour kept, alpha dropped
    ds = read_folder(tmp_path / "pal")
    assert ds.images.shape == (2, 2, 2, 3)
    np.testing.assert_array_equal(ds.images[0], colours[idx])
    np.testing.assert_array_equal(ds.images[1], colours[idx])
    # a grey palette stays one channel
    g = Image.fromarray(idx, mode="P")
    g.putpalette(np.repeat([0, 50, 100, 250], 3).tolist())
    (tmp_path / "gp").mkdir()
    g.save(tmp_path / "gp" / "x.png")
    ds = read_folder(tmp_path / "gp")
    assert ds.images.shape == (1, 2, 2, 1)
    np.testing.assert_array_equal(ds.images[0, ..., 0], np.array([0, 50, 100, 250])[idx])


def test_alpha_and_cmyk_are_converted(tmp_path):
    rgba = RNG.integers(0, 256, (4, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: the colours must survive, not turn black or white
    _png(tmp_path / "rgba" / "x.png", rgba)
    np.testing.assert_array_equal(read_folder(tmp_path / "rgba").images[0], rgba[..., :3])
    la = RNG.integers(0, 256, (4, 4, 2), dtype=np.uint8)
    _png(tmp_path / "la" / "x.png", la)
    ds = read_folder(tmp_path / "la")
    assert ds.images.shape == (1, 4, 4, 1)
    np.testing.assert_array_equal(ds.images[0, ..., 0], la[..., 0])
    cmyk = Image.fromarray(RNG.integers(0, 256, (4, 4, 4), dtype=np.uint8), mode="CMYK")
    (tmp_path / "cmyk").mkdir()
    cmyk.save(tmp_path / "cmyk" / "x.tif")
    np.testing.assert_array_equal(read_folder(tmp_path / "cmyk").images[0], np.asarray(cmyk.convert("RGB")))
    # grey next to colour: grey images become three equal channels
    _png(tmp_path / "rgba" / "y.png", la[..., 0])
    ds = read_folder(tmp_path / "rgba")
    assert ds.images.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(ds.images[1], np.repeat(la[..., :1], 3, axis=-1))


def test_mixed_sizes_are_refused_unless_resize_is_given(tmp_path):
    for i in range(3):
        _png(tmp_path / "m" / f"{i}.png", RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    _png(tmp_path / "m" / "tiny.png", RNG.integers(0, 256, (1, 1, 3), dtype=np.uint8))
    with pytest.raises(ImageInputError) as e:
        load_dataset(f"folder:{tmp_path / 'm'}")
    msg = str(e.value)
    assert _one_line(e) and "0.png" in msg and "16x16" in msg and "tiny.png" in msg and "1x1" in msg
    assert "resize" in msg
    ds = read_folder(tmp_path / "m", resize=8)
    assert ds.images.shape == (4, 8, 8, 3)
    ds = read_folder(tmp_path / "m", resize=16)
    np.testing.assert_array_equal(ds.images[0], np.asarray(Image.open(tmp_path / "m" / "0.png")))
    np.testing.assert_array_equal(ds.images[3], np.broadcast_to(np.asarray(Image.open(tmp_path / "m" / "tiny.png")), (16, 16, 3)))


def test_one_size_folders_keep_the_old_behaviour(tmp_path):
    wide = RNG.integers(0, 256, (3, 10, 14, 3), dtype=np.uint8)  # H=10, W=14: centre crop to 10x10
    for i, a in enumerate(wide):
        _png(tmp_path / "w" / f"{i}.png", a)
    ds = read_folder(tmp_path / "w")
    assert ds.images.shape == (3, 10, 10, 3)
    np.testing.assert_array_equal(ds.images, wide[:, :, 2:12])
    big = RNG.integers(0, 256, (2, 80, 80), dtype=np.uint8)  # above max_size: downsampled to 64
    for i, a in enumerate(big):
        _png(tmp_path / "b" / f"{i}.png", a)
    assert read_folder(tmp_path / "b").images.shape == (2, 64, 64, 1)
    # the mixed-size folder of test_data.py, made one size: labels per class folder
    arr = RNG.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    for cls in ("cat", "dog"):
        for i in range(2):
            _png(tmp_path / "imgs" / cls / f"{i}.png", arr[i])
    ds = load_dataset(f"folder:{tmp_path / 'imgs'}")
    assert ds.images.shape == (4, 16, 16, 3) and ds.labels.tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(ds.images[0], arr[0])


@pytest.mark.parametrize("content", ["random", "truncated", "empty"])
def test_unreadable_image_is_a_one_line_error_naming_it(tmp_path, content):
    _png(tmp_path / "c" / "a.png", RNG.integers(0, 256, (8, 8), dtype=np.uint8))
    good = (tmp_path / "c" / "a.png").read_bytes()
    bad = {"random": RNG.bytes(200), "truncated": good[: len(good) // 2], "empty": b""}[content]
    (tmp_path / "c" / "x.png").write_bytes(bad)
    with pytest.raises(ValueError) as e:
        read_folder(tmp_path / "c")
    assert isinstance(e.value, ImageInputError) and _one_line(e)
    assert str(e.value).startswith(f"cannot read image {tmp_path / 'c' / 'x.png'}: ")


def test_cli_reports_folder_problems_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OODKIT_CACHE", str(tmp_path / "cache"))
    _png(tmp_path / "c" / "a.png", RNG.integers(0, 256, (8, 8), dtype=np.uint8))
    (tmp_path / "c" / "x.png").write_bytes(b"not a png")
    r = CliRunner().invoke(main, ["train", "--data", "folder:c", "--out", "m.pt"])
    assert r.exit_code == 2 and "cannot read image" in r.output and "x.png" in r.output
    assert "Traceback" not in r.output


def test_paths_are_kept_in_sorted_order_through_subsets(tmp_path):
    names = ["b/2.png", "a/10.png", "a/1.png", "b/0.png", "c/x.png"]
    for n in names:
        _png(tmp_path / "p" / n, RNG.integers(0, 256, (4, 4), dtype=np.uint8))
    ds = read_folder(tmp_path / "p")
    rel = [str(tmp_path / "p" / n) for n in ["a/1.png", "a/10.png", "b/0.png", "b/2.png", "c/x.png"]]
    assert ds.paths == rel
    for img, p in zip(ds.images, ds.paths):
        np.testing.assert_array_equal(img[..., 0], np.asarray(Image.open(p)))
    sub = ds.subset(np.array([4, 1]))
    assert sub.paths == [rel[4], rel[1]]
    for split in ("train", "test"):
        part = load_dataset(f"folder:{tmp_path / 'p'}", split, holdout=True)
        assert len(part.paths) == len(part)
        for img, p in zip(part.images, part.paths):
            np.testing.assert_array_equal(img[..., 0], np.asarray(Image.open(p)))


def test_imageset_without_paths_still_works():
    ds = ImageSet(np.zeros((3, 4, 4), np.uint8), None, "x")
    assert ds.paths is None and ds.subset([0, 1]).paths is None
    with pytest.raises(ValueError, match="3 images but 2 paths"):
        ImageSet(np.zeros((3, 4, 4), np.uint8), None, "x", paths=["a", "b"])


def test_non_images_and_hidden_files_are_skipped(tmp_path):
    _png(tmp_path / "s" / "a.png", RNG.integers(0, 256, (4, 4), dtype=np.uint8))
    (tmp_path / "s" / "notes.txt").write_text("hello")
    (tmp_path / "s" / "Thumbs.db").write_bytes(RNG.bytes(50))
    (tmp_path / "s" / ".hidden.png").write_bytes(RNG.bytes(50))  # e.g. macOS ._ files
    (tmp_path / "s" / ".ipynb_checkpoints").mkdir()
    _png(tmp_path / "s" / ".ipynb_checkpoints" / "b.png", RNG.integers(0, 256, (9, 9), dtype=np.uint8))
    (tmp_path / "s" / "dir.png").mkdir()  # a folder named like an image
    ds = read_folder(tmp_path / "s")
    assert ds.paths == [str(tmp_path / "s" / "a.png")] and ds.images.shape == (1, 4, 4, 1)


@pytest.mark.parametrize("layout", ["empty", "no-images"])
def test_folder_without_images_is_a_one_line_error(tmp_path, layout):
    (tmp_path / "e" / "sub").mkdir(parents=True)
    if layout == "no-images":
        (tmp_path / "e" / "readme.txt").write_text("x")
        (tmp_path / "e" / ".x.png").write_bytes(b"")
    with pytest.raises(DataNotFound) as e:
        load_dataset(f"folder:{tmp_path / 'e'}")
    assert _one_line(e) and "no images" in str(e.value) and str(tmp_path / "e") in str(e.value)


def test_cli_score_resize_reads_a_folder_of_mixed_sizes(tmp_path, monkeypatch):
    """`oodkit score --resize N` is how a user follows the mixed-size error's advice; the
    CSV keeps each file's path."""
    import pandas as pd
    from click.testing import CliRunner

    from oodkit.checkpoint import save_checkpoint
    from oodkit.cli import main

    from .test_detectors import fixed_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "imgs").mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([8, 12, 8, 20]):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    save_checkpoint(tmp_path / "m.pt", fixed_model())
    args = ["score", "--model", "m.pt", "--data", "folder:imgs", "--out", "s.csv", "--quiet"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "differ in size" in r.output
    r = CliRunner().invoke(main, args + ["--resize", "8"])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "s.csv")
    assert [p.split("/")[-1] for p in df["path"]] == ["0.png", "1.png", "2.png", "3.png"]


def test_folder_decoded_by_dataloader_workers_equals_the_serial_read(tmp_path):
    (tmp_path / "w").mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(tmp_path / "w" / f"{i:02d}.png")
    serial, parallel = read_folder(tmp_path / "w"), read_folder(tmp_path / "w", num_workers=2)
    np.testing.assert_array_equal(serial.images, parallel.images)
    assert serial.paths == parallel.paths
    (tmp_path / "w" / "05.png").write_bytes(b"broken")
    with pytest.raises(ImageInputError, match=r"^cannot read image .*05\.png") as err:
        read_folder(tmp_path / "w", num_workers=2)
    assert "\n" not in str(err.value)
    # the workers are gone with the error: left to the garbage collector they kept decoding (and made
    # the next test's training 5x slower)
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]


def test_what_a_folder_cannot_say_is_refused_or_told(tmp_path):
    """A loose image beside class folders became a class of its own; a name that is not
    UTF-8 failed at the CSV with a codec error naming no file; a linked class folder was
    skipped without a word."""
    import os
    import warnings

    from PIL import Image

    from oodkit.data.sources import read_folder

    a = np.zeros((8, 8), np.uint8)
    for rel in ("mix/loose.png", "mix/cat/a.png", "mix/dog/b.png", "ok/cat/a.png", "elsewhere/c.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(tmp_path / rel)
    with pytest.raises(ValueError, match="both at its top"):
        read_folder(tmp_path / "mix")
    os.symlink(tmp_path / "elsewhere", tmp_path / "ok" / "dog")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(read_folder(tmp_path / "ok")) == 1
    assert any("linked folder" in str(w.message) for w in caught)
    bad = os.fsencode(tmp_path / "ok" / "cat") + b"/caf\xe9.png"
    with open(bad, "wb") as f:
        Image.fromarray(a).save(f, format="PNG")
    with pytest.raises(ValueError, match="not valid UTF-8"):
        read_folder(tmp_path / "ok")
