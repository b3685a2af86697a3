"""Data loading from small files the tests write in the real on-disk formats."""
import pickle
import struct

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from oodkit.data import DataNotFound, ImageInputError, as_images, conform, list_datasets, load_dataset

RNG = np.random.default_rng(0)


def write_cifar10(root, n=6):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    images = RNG.integers(0, 256, (6 * n, 32, 32, 3), dtype=np.uint8)
    labels = RNG.integers(0, 10, 6 * n)
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(files):
        chunk = images[i * n:(i + 1) * n]
        # the release was pickled by Python 2: its str keys read back as str under latin1
        entry = {"data": chunk.transpose(0, 3, 1, 2).reshape(n, -1), "labels": labels[i * n:(i + 1) * n].tolist()}
        with open(base / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f, protocol=2)
    return images, labels


def write_svhn(root, n=7):
    x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = RNG.integers(1, 11, (n, 1))  # SVHN stores digit 0 as label 10
    scipy.io.savemat(root / "test_32x32.mat", {"X": x, "y": y})
    return x.transpose(3, 0, 1, 2), y[:, 0] % 10


def write_idx(path, array):
    if array.ndim == 3:
        header = struct.pack(">IIII", 0x803, *array.shape)
    else:
        header = struct.pack(">II", 0x801, *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root, folder="MNIST", n=5):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    images = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = RNG.integers(0, 10, n)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return images, labels


def test_cifar10_pickles(tmp_path):
    images, labels = write_cifar10(tmp_path)
    test = load_dataset("cifar10", "test", root=tmp_path)
    assert test.images.shape == (6, 32, 32, 3) and test.images.dtype == np.uint8
    np.testing.assert_array_equal(test.images, images[30:])
    np.testing.assert_array_equal(test.labels, labels[30:])
    assert len(load_dataset("cifar10", "train", root=tmp_path)) == 30


def test_svhn_mat(tmp_path):
    images, labels = write_svhn(tmp_path)
    ds = load_dataset("svhn", "test", root=tmp_path)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashionmnist", "FashionMNIST")])
def test_mnist_idx(tmp_path, name, folder):
    images, labels = write_mnist(tmp_path, folder)
    ds = load_dataset(name, "test", root=tmp_path)
    assert ds.images.shape == (5, 28, 28, 1)
    np.testing.assert_array_equal(ds.images[..., 0], images)
    np.testing.assert_array_equal(ds.labels, labels)


def test_npz_under_root_wins_and_unregistered_names_work(tmp_path):
    write_mnist(tmp_path)
    arr = RNG.integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    np.savez(tmp_path / "mnist_test.npz", images=arr, labels=np.arange(3))
    np.testing.assert_array_equal(load_dataset("mnist", "test", root=tmp_path).images, arr)
    np.savez(tmp_path / "mysketches_test.npz", images=arr[..., 0])
    ds = load_dataset("mysketches", "test", root=tmp_path)
    assert ds.images.shape == (3, 28, 28, 1) and ds.labels is None
    names = {r["name"]: r["available"] for r in list_datasets(tmp_path)}
    assert names["mysketches"] == "npz: test" and names["mnist"].startswith("npz")
    assert names["digits"] == "built-in" and names["svhn"] == "-"


def test_generic_npz_and_folder_specs(tmp_path):
    arr = RNG.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "set.npz", images=arr)
    assert len(load_dataset(f"npz:{tmp_path / 'set.npz'}")) == 10
    tr = load_dataset(f"npz:{tmp_path / 'set.npz'}", "train", holdout=True)
    te = load_dataset(f"npz:{tmp_path / 'set.npz'}", "test", holdout=True)
    assert (len(tr), len(te)) == (8, 2)
    np.savez(tmp_path / "x_train.npz", images=arr[:4])
    assert len(load_dataset(f"npz:{tmp_path}/x_{{split}}.npz", "train")) == 4
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(arr[i]).save(tmp_path / "imgs" / cls / f"{i}.png")
    ds = load_dataset(f"folder:{tmp_path / 'imgs'}")
    assert ds.images.shape == (4, 16, 16, 3) and sorted(ds.labels.tolist()) == [0, 0, 1, 1]
    np.testing.assert_array_equal(ds.images[0], arr[0])


def test_bad_files_and_missing_sets(tmp_path):
    np.savez(tmp_path / "nolabels.npz", pixels=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="no 'images' array"):
        load_dataset(f"npz:{tmp_path / 'nolabels.npz'}")
    np.savez(tmp_path / "float.npz", images=np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="must be uint8"):
        load_dataset(f"npz:{tmp_path / 'float.npz'}")
    with pytest.raises(DataNotFound) as e:
        load_dataset("svhn", "test", root=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and "--download" in msg and "svhn_test.npz" in msg
    with pytest.raises(DataNotFound, match="unknown data set 'nosuch'"):
        load_dataset("nosuch", root=tmp_path)
    with pytest.raises(DataNotFound, match="no such folder"):
        load_dataset(f"folder:{tmp_path / 'none'}")


def test_packaged_and_synthetic_sets():
    d = load_dataset("digits-0to4", "train")
    assert set(d.labels.tolist()) == {0, 1, 2, 3, 4} and d.images.max() == 255
    assert len(load_dataset("digits", "train")) + len(load_dataset("digits", "test")) == 1797
    like = load_dataset("digits", "test")
    n = load_dataset("noise", "test", like=like)
    assert n.images.shape == (1000, 8, 8, 1)
    np.testing.assert_array_equal(n.images, load_dataset("noise", "test", like=like).images)  # seeded
    c = load_dataset("constant", "test", like=like).images
    assert (c == c[:, :1, :1]).all()
    assert load_dataset("letters", "test").images.shape[1:] == (8, 8, 1)
    assert load_dataset("sample-patches", "test").images.shape == (600, 8, 8, 1)


def test_as_images_validation():
    u8 = RNG.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    x = as_images(u8)
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.uint8
    assert torch.equal(as_images(torch.from_numpy(u8).permute(0, 3, 1, 2)), x)
    assert as_images(u8[..., 0]).shape == (4, 1, 8, 8)
    with pytest.raises(ImageInputError, match="NaN"):
        as_images(np.full((2, 1, 4, 4), np.nan, np.float32))
    with pytest.raises(ImageInputError, match=r"scaled to \[-1, 1\]"):
        as_images(np.full((2, 1, 4, 4), 200.0, np.float32))
    with pytest.raises(ImageInputError, match="1, 3 or 4 channels"):
        as_images(np.zeros((2, 5, 4, 7), np.uint8))
    with pytest.raises(ImageInputError, match="got shape"):
        as_images(np.zeros((4, 4), np.uint8))
    with pytest.warns(UserWarning, match=r"not \[0, 1\]"):
        as_images(np.full((2, 1, 4, 4), 0.9, np.float32))
    ds = torch.utils.data.TensorDataset(torch.from_numpy(u8).permute(0, 3, 1, 2), torch.arange(4))
    assert torch.equal(as_images(ds), x)
    assert torch.equal(as_images(torch.utils.data.DataLoader(ds, batch_size=3)), x)


def test_conform_downsamples_to_the_smaller_side_first():
    big = torch.from_numpy(RNG.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8))
    direct = conform(big, 32, 3)
    assert torch.equal(direct, big)  # already model size: untouched
    aligned = conform(big, 32, 3, ref_size=28)
    via = torch.nn.functional.interpolate(
        torch.nn.functional.interpolate(big.float(), size=(28, 28), mode="bilinear", antialias=True).round(),
        size=(32, 32), mode="bilinear", antialias=True).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(aligned, via)
    gray = torch.from_numpy(RNG.integers(0, 256, (2, 1, 28, 28), dtype=np.uint8))
    rgb = conform(gray, 32, 3)
    assert rgb.shape == (2, 3, 32, 32) and torch.equal(rgb[:, 0], rgb[:, 2])
    luma = conform(torch.full((1, 3, 8, 8), 100, dtype=torch.uint8), 8, 1)
    assert luma.shape == (1, 1, 8, 8) and (luma == 100).all()


class _Payload:
    """Unpickling this runs ``touch MARKER``: what a crafted CIFAR batch could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["test_batch", "data_batch_1"])
def test_a_crafted_cifar_batch_runs_no_code(tmp_path, where):
    write_cifar10(tmp_path, n=40)  # every class present, so that the bench gets as far as reading
    marker = tmp_path / "pwned"
    with open(tmp_path / "cifar-10-batches-py" / where, "wb") as f:
        pickle.dump({"data": _Payload(marker), "labels": [0]}, f, protocol=2)
    split = "test" if where == "test_batch" else "train"
    with pytest.raises(ValueError, match=rf"^refusing .*{where}: it asks for (posix|os|nt)\.system; oodkit reads "
                                         r"only plain data"):
        load_dataset("cifar10", split, root=tmp_path)
    assert not marker.exists()
    from click.testing import CliRunner

    from oodkit.cli import main

    r = CliRunner().invoke(main, ["bench", "cifar10[0-5]-vs-noise", "--data-root", str(tmp_path), "--quiet",
                                  "--output-dir", str(tmp_path / "out")])
    assert r.exit_code == 2 and "refusing" in r.output and "it asks for" in r.output, r.output
    assert not marker.exists()


def test_cifar_batches_with_objects_or_garbage_are_refused(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    with open(path, "wb") as f:
        pickle.dump({"data": np.array([1, "a", None], dtype=object), "labels": [0]}, f, protocol=2)
    with pytest.raises(ValueError, match="refusing .*test_batch: it (holds|asks for) an array of Python objects"):
        load_dataset("cifar10", "test", root=tmp_path)
    path.write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="test_batch is not a readable pickled batch"):
        load_dataset("cifar10", "test", root=tmp_path)
    with open(path, "wb") as f:
        pickle.dump({"pixels": [1, 2]}, f, protocol=2)
    with pytest.raises(ValueError, match="test_batch is not a cifar10 batch \\(KeyError"):
        load_dataset("cifar10", "test", root=tmp_path)


class _Bomb:
    """Pickles as a call that would build a huge array from a few bytes."""

    def __init__(self, how):
        self.how = how

    def __reduce__(self):
        if self.how == "view":  # a 10^10-element view of one byte
            return np.ndarray, ((10**10,), "u1", b"x", 0, (0,))
        return np.ndarray.__reduce__(np.zeros(0, np.uint8))[0], (np.ndarray, (10**10,), "B")  # uninitialised


@pytest.mark.parametrize("how", ["view", "reconstruct"])
def test_cifar_batches_that_would_allocate_without_bound_are_refused(tmp_path, how):
    write_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": _Bomb(how), "labels": [0]}, f, protocol=2)
    with pytest.raises(ValueError, match="test_batch"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_a_small_batch_of_shared_nested_lists_is_read_in_one_walk(tmp_path):
    write_cifar10(tmp_path)
    x = [0]
    for _ in range(16):  # 10^16 leaves if every reference were walked; 400 bytes on disk
        x = [x] * 10
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": x, "labels": [0]}, f, protocol=2)
    with pytest.raises(ValueError, match="test_batch is not a cifar10 batch"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_wide_pixel_images_are_refused_not_read_as_black(tmp_path):
    """The audit of 2026-12-04: 32-bit integer TIFFs (PIL mode I) holding 0..255 kept only
    their high byte and float TIFFs (mode F) became 0: every image black, rc 0. 16-bit
    images still give their high byte."""
    a = RNG.integers(0, 256, (8, 8)).astype(np.int32)
    (tmp_path / "i32").mkdir()
    Image.fromarray(a).save(tmp_path / "i32" / "a.tif")
    (tmp_path / "f32").mkdir()
    Image.fromarray(a.astype(np.float32) / 255).save(tmp_path / "f32" / "a.tif")
    for d, mode in (("i32", "mode I"), ("f32", "mode F")):
        with pytest.raises(ImageInputError, match=mode) as e:
            load_dataset(f"folder:{tmp_path / d}")
        assert "a.tif" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "u16").mkdir()
    wide = (a * 257).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "u16" / "a.png")
    Image.fromarray(wide).save(tmp_path / "u16" / "b.tif")
    ds = load_dataset(f"folder:{tmp_path / 'u16'}")
    np.testing.assert_array_equal(ds.images[..., 0], np.stack([a, a]).astype(np.uint8))


@pytest.mark.parametrize("labels,ok", [(np.arange(6) % 3 + 0.5, False), (np.array(["a", "b"] * 3), False),
                                       (np.arange(6, dtype=np.float64) % 3, True), (np.array(["1", "2"] * 3), True)])
def test_labels_must_be_integers(tmp_path, labels, ok):
    """The audit of 2026-12-04: labels 0.5, 1.5, ... were cut to 0, 1, ...; text labels
    failed with int()'s message, which names no file."""
    np.savez(tmp_path / "lab.npz", images=np.zeros((6, 4, 4), np.uint8), labels=labels)
    if ok:
        np.testing.assert_array_equal(load_dataset(f"npz:{tmp_path / 'lab.npz'}").labels, labels.astype(float))
        return
    with pytest.raises(ValueError, match="labels must be integers") as e:
        load_dataset(f"npz:{tmp_path / 'lab.npz'}")
    assert "lab" in str(e.value) and "\n" not in str(e.value)


def test_npz_files_that_claim_more_than_they_hold_or_odd_labels_are_refused(tmp_path):
    """A 1 KB shard whose header declared 10**14 images planned 10**10 chunks until memory
    ran out; extra members of any size were read; two members of one name read the last;
    labels of shape (N, 2) or () gave tracebacks, and 1e30, 1+5j or dates became wrong
    class indices without an error."""
    import io
    import zipfile

    from oodkit.data.chunks import plan_chunks
    from oodkit.data.sources import read_npz

    im = np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    (tmp_path / "hd").mkdir()
    np.savez(tmp_path / "hd" / "a.npz", images=im)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False, "shape": (10**14, 8, 8)})
    with zipfile.ZipFile(tmp_path / "hd" / "b.npz", "w") as z:
        z.writestr("images.npy", head.getvalue() + im.tobytes())
    with pytest.raises(ValueError, match="declares shape"):
        plan_chunks(f"npz:{tmp_path / 'hd'}")
    with zipfile.ZipFile(tmp_path / "two.npz", "w") as z:
        for a in (im, im[:2]):
            buf = io.BytesIO()
            np.save(buf, a)
            z.writestr("images.npy", buf.getvalue())
    with pytest.raises(ValueError, match="appears twice"):
        read_npz(tmp_path / "two.npz")
    np.savez(tmp_path / "extra.npz", images=im, junk=np.zeros(3))
    read = []
    real = np.lib.npyio.NpzFile.__getitem__
    np.lib.npyio.NpzFile.__getitem__ = lambda self, k: read.append(k) or real(self, k)
    try:
        read_npz(tmp_path / "extra.npz")
    finally:
        np.lib.npyio.NpzFile.__getitem__ = real
    assert "junk" not in read
    for labels, words in ((np.zeros((5, 2), int), "shape"), (np.array(3), "shape"),
                          (np.array([1e30] * 5), "64 bits"), (np.array([1 + 5j] * 5), "integers"),
                          (np.array(["2020-01-01"] * 5, dtype="datetime64[D]"), "integers"),
                          (np.array([2**64 - 1] * 5, dtype=np.uint64), "64 bits")):
        np.savez(tmp_path / "l.npz", images=im, labels=labels)
        with pytest.raises(ValueError, match=words):
            read_npz(tmp_path / "l.npz")


def test_names_and_members_that_hide_what_they_are(tmp_path, monkeypatch):
    """A name with a path separator was looked up beside the data root; a comma in a file's
    name split it into two OOD sets ("no such file: c"); tar members that are neither
    images nor labels were dropped without the warning folder: gives."""
    import io
    import tarfile
    import warnings

    from PIL import Image

    from oodkit.bench import parse_spec
    from oodkit.data import DataNotFound
    from oodkit.data.shards import read_tar

    (tmp_path / "root").mkdir()
    np.savez(tmp_path / "x_test.npz", images=np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(DataNotFound, match="no path separator"):
        load_dataset("../x", "test", tmp_path / "root")
    monkeypatch.chdir(tmp_path)
    np.savez("c,d.npz", images=np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="rename it without the comma"):
        parse_spec("digits-0to4-vs-npz:c,d.npz")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="PNG")
    with tarfile.open("t.tar", "w") as t:
        for name, data in (("0.png", buf.getvalue()), ("0.txt", b"caption")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(read_tar("t.tar")) == 1
    assert any("skipped 1 member" in str(w.message) and "0.txt" in str(w.message) for w in caught)


def test_a_download_without_a_network_names_the_set_and_the_offline_fix(tmp_path, monkeypatch):
    """`--download` with no network said only `<urlopen error [Errno -2] Name or service not known>`."""
    import urllib.error

    import torchvision.datasets as tvd

    def offline(*a, **k):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(tvd, "MNIST", offline)
    with pytest.raises(DataNotFound, match=r"mnist \(test\) not found.*the download failed \(is there a network\?\)"
                                           r".*mnist_test.npz"):
        load_dataset("mnist", "test", tmp_path, download=True)
