"""Tampered and damaged detector files: every edit is refused by name, in one line, or the
file scores exactly as before."""
import json

import numpy as np
import pytest

from oodkit.checkpoint import save_checkpoint
from oodkit.data import as_images, load_dataset
from oodkit.detectors import make_detector
from oodkit.detectors.persist import DetectorFileError, load_detectors, save_detectors
from oodkit.representation import clear_cache

from .test_detectors import fixed_model

NAMES = ["loglik", "typicality", "profile", "profile-gmm", "features", "features-gauss", "fused"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    clear_cache()
    root = tmp_path_factory.mktemp("tamper")
    save_checkpoint(root / "m.pt", fixed_model(seed=2))
    x = as_images(load_dataset("digits-0to4", "train").images)
    dets = {n: make_detector(n, model=str(root / "m.pt"), progress=False, n_levels=8).fit(x) for n in NAMES}
    save_detectors(root / "d.npz", dets)
    with np.load(root / "d.npz") as z:
        arrays = dict(z)
    header = json.loads(arrays.pop("__header__").tobytes())
    test = as_images(load_dataset("letters", "test").images)[:40]
    return root, header, arrays, {n: d.score_samples(test) for n, d in dets.items()}, test


def _write(root, header, arrays, name="t.npz"):
    path = root / name
    np.savez(path, **arrays, __header__=np.frombuffer(json.dumps(header).encode(), np.uint8))
    return path


def _edited(saved, edit):
    root, header, arrays, _, _ = saved
    h, a = json.loads(json.dumps(header)), {k: v.copy() for k, v in arrays.items()}
    edit(h, a)
    return _write(root, h, a)


def _refused(path, pattern):
    with pytest.raises(DetectorFileError, match=pattern) as e:
        load_detectors(path)
    assert "\n" not in str(e.value)
    return str(e.value)


def _key(h, name):
    return h["detectors"][name]["key"]


CASES = {
    "offset NaN": (lambda h, a: h["detectors"]["loglik"].update(offset=float("nan")),
                   r"'loglik' has threshold \(offset\) nan; a finite number is needed"),
    "offset inf": (lambda h, a: h["detectors"]["fused"].update(offset=float("inf")),
                   r"'fused' has threshold \(offset\) inf"),
    "offset string": (lambda h, a: h["detectors"]["loglik"].update(offset="0"), r"threshold \(offset\) '0'"),
    "offset moved": (lambda h, a: h["detectors"]["loglik"].update(offset=h["detectors"]["loglik"]["offset"] - 3.0),
                     r"'loglik' has a threshold .* that is none of its calibration scores: the file was edited"),
    "calibration removed": (lambda h, a: a.pop(f"{_key(h, 'profile')}/__calibration__"),
                            r"'profile' has no calibration scores: refit it"),
    "calibration NaN": (lambda h, a: a.__setitem__(f"{_key(h, 'profile')}/__calibration__",
                                                   np.full(5, np.nan)), r"'profile' has damaged calibration scores"),
    "covariance smaller": (lambda h, a: a.__setitem__(f"{_key(h, 'features-gauss')}/covariance", np.eye(3)),
                           r"'features-gauss' \(features-gauss\) state 'covariance' has shape \(3, 3\)"),
    "covariance zero": (lambda h, a: a.__setitem__(f"{_key(h, 'features-gauss')}/covariance",
                                                   np.zeros_like(a[f"{_key(h, 'features-gauss')}/covariance"])),
                        r"state 'covariance' is not a positive definite covariance"),
    "typicality mean NaN": (lambda h, a: a.__setitem__(f"{_key(h, 'typicality')}/mean", np.array(np.nan)),
                            r"'typicality' \(typicality\) state 'mean' holds NaN or infinite values"),
    "kNN bank NaN": (lambda h, a: a[f"{_key(h, 'features')}/train_z"].__setitem__((0, 0), np.nan),
                     r"state 'train_z' holds NaN"),
    "kNN bank other width": (lambda h, a: a.__setitem__(f"{_key(h, 'features')}/train_z", np.ones((50, 3))),
                             r"'features' was fitted on 3 features and its model gives"),
    "gmm weights": (lambda h, a: a.__setitem__(f"{_key(h, 'profile-gmm')}/weights",
                                               a[f"{_key(h, 'profile-gmm')}/weights"] * 2),
                    r"state 'weights' does not sum to 1"),
    "fused ref unsorted": (lambda h, a: a.__setitem__(f"{_key(h, 'fused')}/profile.ref",
                                                      a[f"{_key(h, 'fused')}/profile.ref"][::-1].copy()),
                           r"component profile: state 'ref' must be sorted"),
    "fused scale zero": (lambda h, a: a.__setitem__(f"{_key(h, 'fused')}/complexity.scale", np.array(0.0)),
                         r"state 'scale' must be positive"),
    "n_levels zero": (lambda h, a: h["detectors"]["profile"]["params"].update(n_levels=0),
                      r"'profile': CDMDetector parameter n_levels must be an integer in \[1, 100000\], got 0"),
    "n_levels huge": (lambda h, a: h["detectors"]["profile"]["params"].update(n_levels=10**12),
                      r"parameter n_levels must be an integer"),
    "batch size string": (lambda h, a: h["detectors"]["loglik"]["params"].update(batch_size="8"),
                          r"parameter batch_size must be an integer in \[1, 1000000\], got '8'"),
    "step as float": (lambda h, a: h["detectors"]["profile"]["params"].update(n_neighbors=2.5),
                      r"parameter n_neighbors must be an integer"),
    "contamination auto": (lambda h, a: h["detectors"]["loglik"]["params"].update(contamination="auto"),
                           r"parameter contamination must be a number in \[0, 0.5\)"),
    "unknown score": (lambda h, a: h["detectors"]["loglik"]["params"].update(score="nosuch"), r"unknown score"),
    "class head score without head": (lambda h, a: h["detectors"]["loglik"]["params"].update(score="msp"),
                                      r"'loglik' \(msp\) needs a model with that head"),
    "state list not a list": (lambda h, a: h["detectors"]["profile"].update(state="train_z"),
                              r"'profile' has no valid 'state'"),
    "model entry missing": (lambda h, a: h["detectors"]["loglik"].update(model="model9"),
                            r"refers to model 'model9', which the file lacks"),
    "entry not a dict": (lambda h, a: h["detectors"].update(loglik=[1, 2]), r"'loglik' is not a valid entry"),
}


@pytest.mark.parametrize("text", ['{"format": "oodkit-detector", "deep": ' + "[" * 100000 + "]" * 100000 + "}",
                                  '"just a string"', "[1, 2]", "null"])
def test_headers_that_are_not_objects_or_nest_too_deep_are_refused(saved, text):
    root, _, arrays, _, _ = saved
    np.savez(root / "h.npz", **arrays, __header__=np.frombuffer(text.encode(), np.uint8))
    _refused(root / "h.npz", r"not an oodkit detector file")


@pytest.mark.parametrize("case", list(CASES))
def test_each_tampering_is_refused_by_name(saved, case):
    edit, pattern = CASES[case]
    _refused(_edited(saved, edit), pattern)


def test_untouched_file_scores_as_before(saved):
    root, header, arrays, before, test = saved
    back = load_detectors(_write(root, header, arrays, "same.npz"))
    for n in NAMES:
        np.testing.assert_array_equal(back[n].score_samples(test), before[n])


def test_random_edits_are_refused_or_change_nothing(saved):
    """Fuzz: random edits of header numbers and array entries. Each edit is refused with a
    DetectorFileError, or the detectors score exactly as before."""
    root, header, arrays, before, test = saved
    rng = np.random.default_rng(0)
    values = [np.nan, np.inf, -np.inf, 0.0, -1.0, 1e300, 2.5, 7]
    refused = same = 0
    for i in range(40):
        h, a = json.loads(json.dumps(header)), {k: v.copy() for k, v in arrays.items()}
        name = NAMES[rng.integers(len(NAMES))]
        if rng.random() < 0.5:
            params = h["detectors"][name]["params"]
            key = sorted(params)[rng.integers(len(params))]
            params[key] = values[rng.integers(len(values))]
            if isinstance(params[key], float) and not np.isfinite(params[key]):
                params[key] = str(params[key])  # JSON has no NaN: what an editor would type
        else:
            keys = [k for k in a if k.startswith(h["detectors"][name]["key"] + "/")]
            k = keys[rng.integers(len(keys))]
            flat = a[k].reshape(-1)
            flat[rng.integers(flat.size)] = values[rng.integers(len(values))]
        path = _write(root, h, a, f"fuzz{i}.npz")
        try:
            back = load_detectors(path)
        except DetectorFileError as e:
            assert "\n" not in str(e)
            refused += 1
            continue
        # accepted: the edit touched nothing that scoring reads (e.g. a no-op value)
        for n in NAMES:
            np.testing.assert_array_equal(back[n].score_samples(test), before[n], err_msg=f"edit {i} on {name}")
        same += 1
    assert refused > 20


def test_a_model_entry_re_pointed_at_another_valid_model_is_refused(saved):
    """The model's path and SHA-256 edited to name another sound checkpoint: it loads, but
    the detector's checksum covers its model entry."""
    from oodkit.checkpoint import file_sha256

    root, header, arrays, _, _ = saved
    save_checkpoint(root / "other.pt", fixed_model(seed=9))

    def repoint(h, a):
        h["models"]["model0"].update(path=str(root / "other.pt"), relpath="other.pt",
                                     sha256=file_sha256(root / "other.pt"))

    _refused(_edited(saved, repoint), r"does not match its SHA-256: the file was edited or damaged")


def test_members_the_header_does_not_name_are_refused_unread(saved):
    """A 4 KB member nothing refers to was read whole (a zero member of 4 GiB compresses
    to 4 MB and took 4.9 GB of memory)."""
    path = _edited(saved, lambda h, a: a.update(extra=np.zeros(1000)))
    _refused(path, r"does not name \('extra'\)")


def test_a_member_whose_header_claims_more_than_it_holds_is_one_line(saved, tmp_path):
    """A member declaring 10^12 floats ran out of memory with advice about --batch-size."""
    import io
    import zipfile

    root, header, arrays, _, _ = saved
    path = _write(root, header, arrays, "huge.npz")
    key = next(k for k in arrays if k.endswith("__calibration__"))
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    member.write(arrays[key].astype("<f8").tobytes())
    out = tmp_path / "huge.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, member.getvalue() if name == f"{key}.npy" else src.read(name))
    _refused(out, "declares")
