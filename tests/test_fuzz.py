"""Property-based fuzzing (hypothesis) of the CLI's arguments and of a detector's inputs.

Every example must end either in success or in a one-line error (exit 2 / ValueError /
TypeError); never a traceback, another exception type, or NaN scores. Examples are
derandomized so that the suite is reproducible; known bugs are pinned by the strict
tests at the end (and in test_bad_inputs.py).
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings, strategies as st

from oodkit.cli import main
from oodkit.data import ImageInputError, as_images, load_dataset
from oodkit.detectors import make_detector

from .test_detectors import fixed_model

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
_ids = itertools.count()


# -- the CLI -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder to run in, with OODKIT_CACHE inside it and a 2-step tiny CDM m.pt."""
    d = tmp_path_factory.mktemp("fuzzcli")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        mp.setenv("OODKIT_CACHE", str(d / "cache"))
        r = CliRunner().invoke(main, ["train", "--data", "digits-0to4", "--net", "tiny", "-T", "10", "--steps", "2",
                                      "--quiet", "--out", "m.pt", "--device", "cpu"])
        assert r.exit_code == 0, r.output
        yield d


def _invoke(args):
    return CliRunner().invoke(main, [a for a in args if a is not None], catch_exceptions=True)


def _assert_clean(r, args):
    """Exit 0, or exit 2 with exactly one 'Error:' line, the last one; never a traceback."""
    shown = f"args={args}\noutput={r.output!r}\nexception={r.exception!r}"
    assert r.exception is None or isinstance(r.exception, SystemExit), shown
    assert r.exit_code in (0, 2), shown
    assert "Traceback" not in r.output, shown
    event(f"exit {r.exit_code}" + (" " + r.output.strip().splitlines()[-1][:70] if r.exit_code == 2 else ""))
    if r.exit_code == 2:
        lines = [l for l in r.output.splitlines() if l.strip()]
        errors = [l for l in lines if l.startswith("Error:")]
        assert len(errors) == 1 and lines[-1] == errors[0], shown
    else:
        assert "wrote" in r.output, shown


def _opt(name, valid, invalid=()):
    """An option left out (None), given a valid value, or (about one draw in ten) an invalid
    one, so that a fair share of the examples gets past validation and does real work."""
    def pick(k):
        if k == 0 and invalid:
            return st.sampled_from(list(invalid))
        return st.one_of(st.none(), st.sampled_from(list(valid)))
    return st.integers(0, 9).flatmap(pick).map(lambda v: None if v is None else (name, v))


def _flatten(pairs):
    return [x for p in pairs if p is not None for x in p]


# lr >= ~3.4e39 (e.g. 1e40, 1e308) overflows float32 inside Adam: pinned in test_bad_inputs.py
TRAIN_OPTS = [
    _opt("--steps", ["1", "2", "3"], ["0", "-1", "x", "1.5", ""]),
    _opt("--batch-size", ["1", "16", "64", "100"], ["0", "-3", "y", "2.0"]),
    _opt("--lr", ["1e-3", "2e-4", "1", "1e30", "inf"], ["0", "-1", "nan", "-inf", "abc"]),
    _opt("--ema-decay", ["0", "0.5", "0.999"], ["1", "-0.1", "nan", "1.5", "inf"]),
    _opt("--grad-clip", ["0", "1", "1e-9", "inf"], ["-1", "nan", "-inf"]),
    _opt("--save-every", ["0", "1", "2"], ["-1", "z"]),
    _opt("--image-size", ["8", "16", "9"], ["0", "-1", "7", "65", "1"]),
    _opt("-T", ["1", "2", "10"], ["0", "-5", "t"]),
    _opt("--net", ["tiny"], ["nosuch", "", "TINY", "tiny "]),
    _opt("--kind", ["cdm", "ddpm", "joint"], ["gan"]),
    _opt("--warmup", ["0", "1"], ["-1"]),
]


@settings(FUZZ, max_examples=15)  # each example trains: the bad values are in every strategy
@given(opts=st.tuples(*TRAIN_OPTS))
def test_fuzz_train_arguments(workdir, opts):
    opts = dict(p for p in opts if p is not None)
    opts.setdefault("--steps", "2")
    if opts["--steps"] not in ("0", "-1", "x", "1.5", ""):
        assert int(opts["--steps"]) <= 3
    opts.setdefault("--net", "tiny")
    opts.setdefault("-T", "10")
    args = ["train", "--data", "digits-0to4", "--quiet", "--device", "cpu", "--out", f"t{next(_ids)}.pt",
            *_flatten(opts.items())]
    _assert_clean(_invoke(args), args)


BENCH_OPTS = [
    _opt("--max-train", ["40", "1", "6"], ["0", "-1", "x"]),
    _opt("--max-test", ["20", "1", "2"], ["0", "-2"]),
    _opt("--jpeg-ood", ["1", "50", "100"], ["0", "101", "-5", "q"]),
    _opt("--batch-size", ["1", "7", "256"], ["0", "-1"]),
    # never left out: the default runs every detector (~40 s)
    st.integers(0, 1).flatmap(lambda k: st.sampled_from(
        [",", "nosuch", "@cdm", " , ", "loglik,nosuch", "LOGLIK", "loglik@ddpm"] if k == 0 else
        ["loglik", "posterior", "loglik@cdm", "loglik,,", "expected-t", "complexity"])).map(lambda v: ("--detectors", v)),
    _opt("--model", ["m.pt", "m.pt,", "m.pt,m.pt"], [",", "", "x.pt", " ", "m.pt,x.pt"]),
    _opt("--bootstrap", ["0", "3"], ["-1"]),
]


@settings(FUZZ, max_examples=15)
@given(opts=st.tuples(*BENCH_OPTS))
def test_fuzz_bench_arguments(workdir, opts):
    opts = dict(p for p in opts if p is not None)
    # keep the run short: few images, a 2-step tiny model when one is trained here
    opts.setdefault("--max-train", "40")
    opts.setdefault("--max-test", "20")
    opts.setdefault("--bootstrap", "0")
    args = ["bench", "digits-0to4-vs-noise", "--net", "tiny", "--steps", "2", "-T", "10", "--quiet", "--device", "cpu",
            "--output-dir", f"b{next(_ids)}", *_flatten(opts.items())]
    _assert_clean(_invoke(args), args)


# -- a detector's inputs -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def detector():
    train = as_images(load_dataset("digits-0to4", "train").images)
    return make_detector("loglik", model=fixed_model(), progress=False).fit(train)


def _good_shapes(n):
    return [(n, 8, 8), (n, 1, 8, 8), (n, 8, 8, 1), (n, 3, 8, 8), (n, 8, 8, 3), (n, 4, 8, 8), (n, 8, 8, 4)]


SHAPES = st.one_of(
    st.integers(0, 4).flatmap(lambda n: st.sampled_from(_good_shapes(n))),  # NCHW / NHWC / grey at the model's size
    st.integers(1, 4).map(lambda n: (n, 1, 8, 8)),
    st.lists(st.integers(1, 9), min_size=1, max_size=5).map(tuple),  # anything, ndim 1-5 (empty axes: see below)
)
DTYPES = st.sampled_from(["uint8", "int64", "float32", "float64", "bool"])
VALUES = st.one_of(st.sampled_from(["pixels", "unit"]),
                   st.sampled_from(["01", "negative", "big", "nan", "inf", "mixed", "huge"]))


def _make(shape, dtype, values, seed, container):
    rng = np.random.default_rng(seed)
    if values == "pixels":
        a = rng.integers(0, 256, shape).astype(np.float64)
    elif values == "unit":
        a = rng.uniform(-1, 1, shape)
    elif values == "01":
        a = rng.uniform(0, 1, shape)
    elif values == "negative":
        a = rng.uniform(-300, 0, shape)
    elif values == "big":
        a = rng.uniform(0, 1000, shape)
    elif values == "huge":
        a = rng.choice([-1e30, 1e30, 3e38, -1.0, 1.0], shape)
    elif values in ("nan", "inf"):
        a = rng.uniform(-1, 1, shape)
        if a.size:
            a.flat[rng.integers(a.size)] = np.nan if values == "nan" else rng.choice([np.inf, -np.inf])
    else:
        a = rng.choice([-1.0, 0.0, 1.0, 0.5, 255.0, 256.0, -1e-3, 1 + 1e-3, np.nan, -0.0], shape)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        a = a.astype(dtype)
    return torch.from_numpy(a.copy()) if container == "torch" else a


def _check_scores(det, x, n):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = det.score_samples(x)
    except (ValueError, TypeError) as e:  # ImageInputError is a ValueError
        msg = str(e).strip()
        assert msg and "\n" not in msg, f"not a one-line error: {msg!r}"
        return "refused"
    assert isinstance(s, np.ndarray) and s.dtype == np.float64 and s.shape == (n,), (type(s), getattr(s, "shape", None))
    assert np.isfinite(s).all(), s
    return "scored"


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(shape=SHAPES, dtype=DTYPES, values=VALUES, seed=st.integers(0, 2**32 - 1),
       container=st.sampled_from(["numpy", "torch"]))
def test_fuzz_detector_inputs(detector, shape, dtype, values, seed, container):
    x = _make(shape, dtype, values, seed, container)
    event(_check_scores(detector, x, shape[0]))


def test_detector_inputs_that_must_score(detector):
    """The generator above must reach the success path too: valid inputs in every layout."""
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (5, 8, 8)).astype(np.uint8)
    for x in (px[:, None], px[..., None], px, torch.from_numpy(px[:, None].copy()), px.astype(np.int64)[:, None],
              px[:, None].astype(np.float32) / 127.5 - 1, torch.from_numpy(px[:, None] / 127.5 - 1)):
        assert _check_scores(detector, x, 5) == "scored"


@pytest.mark.parametrize("shape,dtype,container", [
    ((2, 0, 8), "float32", "numpy"), ((2, 1, 0, 0), "float64", "numpy"), ((2, 0, 8), "int64", "numpy"),
    ((1, 1, 8, 0), "float32", "torch"),
])
def test_images_with_an_empty_axis_are_refused(detector, shape, dtype, container):
    x = _make(shape, dtype, "unit", 0, container)
    with pytest.raises(ValueError):
        detector.score_samples(x)


def test_out_of_range_float64_is_reported_as_out_of_range():
    with pytest.raises(ImageInputError) as e:
        as_images(np.full((2, 8, 8), 1e300))
    assert "NaN or inf" not in str(e.value) and "[-1, 1]" in str(e.value)
