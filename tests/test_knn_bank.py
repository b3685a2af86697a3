"""kNN banks that grow gently (issue 22): above ``max_bank`` training rows the kNN scores
search a seeded subsample, and every training row keeps an out-of-sample score."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from oodkit.checkpoint import save_checkpoint
from oodkit.conformal import conformal_threshold
from oodkit.data import as_images, load_dataset
from oodkit.detectors import make_detector
from oodkit.detectors.persist import load_detector
from oodkit.detectors.scores import MAX_BANK, FeatureKNN, KNNBank, Profile
from oodkit.representation import clear_cache

from .test_detectors import fixed_model


class _Rep:
    """What the kNN scorers read of a Representation: pooled features and a profile."""

    dim = 1

    def __init__(self, z):
        self.z = z
        self.features = torch.from_numpy(z.astype(np.float32))

    def levels(self, t):
        return self.z[:, t]


def _kth(q, bank, k):
    """Brute force: the k-th smallest Euclidean distance from each row of q to bank."""
    d = np.sqrt(((q[:, None, :] - bank[None, :, :]) ** 2).sum(-1))
    return np.sort(d, axis=1)[:, k - 1]


def test_a_bank_that_holds_every_row_is_exact_leave_one_out():
    z = np.random.default_rng(0).standard_normal((300, 6))
    for max_bank in (None, 300, 10_000):
        bank = KNNBank(5, max_bank).fit(z, "test")
        assert bank.in_bank_.all()
        # leave-one-out: the 6th nearest row counting the row itself (distance 0)
        np.testing.assert_allclose(bank.train_distance(z), _kth(z, z, 6), rtol=1e-12)


def test_a_subsampled_bank_gives_members_leave_one_out_and_the_rest_fresh_distances():
    z = np.random.default_rng(1).standard_normal((400, 5))
    bank = KNNBank(3, 100, seed=4).fit(z, "test")
    assert bank.in_bank_.sum() == 100 and bank.bank_.shape == (100, 5)
    np.testing.assert_array_equal(bank.bank_, z[bank.in_bank_])
    got = bank.train_distance(z)
    np.testing.assert_allclose(got[bank.in_bank_], _kth(z[bank.in_bank_], bank.bank_, 4), rtol=1e-12)
    np.testing.assert_allclose(got[~bank.in_bank_], _kth(z[~bank.in_bank_], bank.bank_, 3), rtol=1e-12)
    q = np.random.default_rng(2).standard_normal((50, 5))
    np.testing.assert_allclose(bank.distance(q), _kth(q, bank.bank_, 3), rtol=1e-12)
    # another seed picks another bank
    assert not np.array_equal(KNNBank(3, 100, seed=5).fit(z, "test").in_bank_, bank.in_bank_)


def test_the_bank_and_the_scores_do_not_depend_on_the_order_of_the_training_rows():
    z = np.random.default_rng(3).standard_normal((500, 4))
    perm = np.random.default_rng(4).permutation(500)
    a, b = FeatureKNN(5, 120).fit(_Rep(z)), FeatureKNN(5, 120).fit(_Rep(z[perm]))
    np.testing.assert_array_equal(a.bank.in_bank_[perm], b.bank.in_bank_)
    np.testing.assert_array_equal(a.train_score(_Rep(z))[perm], b.train_score(_Rep(z[perm])))
    q = _Rep(np.random.default_rng(5).standard_normal((40, 4)))
    np.testing.assert_array_equal(a.score(q), b.score(q))


def test_out_of_sample_scores_of_a_subsampled_bank_give_a_threshold_that_holds_on_fresh_rows():
    """The bank's rows are scored leave-one-out and the others are fresh to it, so the
    conformal threshold on them accepts about 0.95 of new ID rows (in-sample distances, a
    row counting itself, would accept all training rows and far fewer fresh ones)."""
    rng = np.random.default_rng(6)
    mix = rng.standard_normal((20, 20)) / 4
    train, fresh = (_Rep(rng.standard_normal((m, 20)) @ mix) for m in (3000, 20000))
    for scorer in (Profile(np.arange(20), "knn", max_bank=400), FeatureKNN(5, 400)):
        scorer.fit(train)
        s = scorer.score(fresh)
        cut = conformal_threshold(scorer.train_score(train), 0.95)
        assert 0.94 <= (s >= cut).mean() <= 0.965, (type(scorer).__name__, (s >= cut).mean())


def test_out_of_sample_scores_need_the_rows_the_bank_was_fitted_on():
    z = np.random.default_rng(7).standard_normal((50, 3))
    with pytest.raises(ValueError, match="fitted on"):
        KNNBank(5, 20).fit(z, "test").train_distance(z[:40])


@pytest.fixture(scope="module")
def digits():
    return as_images(load_dataset("digits-0to4", "train").images), as_images(load_dataset("letters", "test").images)


def test_a_detector_with_a_bank_keeps_only_the_bank_in_its_file_and_scores_the_same_after_loading(digits, tmp_path):
    train, letters = digits
    clear_cache()
    save_checkpoint(tmp_path / "m.pt", fixed_model(seed=3, rotations=4))
    det = make_detector("fused", model=str(tmp_path / "m.pt"), max_bank=200).fit(train)
    assert det.max_bank == 200 and len(det.calibration_scores_) == len(train)
    det.save(tmp_path / "d.npz")
    with np.load(tmp_path / "d.npz") as f:
        banks = {k: f[k].shape for k in f.files if k.endswith("train_z")}
    assert banks and all(shape[0] == 200 for shape in banks.values()), banks
    back = load_detector(tmp_path / "d.npz")
    assert back.max_bank == 200
    np.testing.assert_array_equal(back.score_samples(letters), det.score_samples(letters))
    whole = make_detector("fused", model=str(tmp_path / "m.pt"), max_bank=None).fit(train)
    assert not np.array_equal(whole.score_samples(letters), det.score_samples(letters))


def test_changing_max_bank_after_fit_asks_for_a_refit_and_a_bank_not_above_k_is_refused(digits):
    from sklearn.exceptions import NotFittedError

    train, letters = digits
    det = make_detector("features", model=fixed_model(seed=1)).fit(train[:100])
    det.set_params(max_bank=50)
    with pytest.raises(NotFittedError, match="max_bank changed"):
        det.score_samples(letters)
    with pytest.raises(ValueError, match="max_bank=5 must exceed n_neighbors=5"):
        make_detector("features", model=fixed_model(seed=1), max_bank=5).fit(train[:100])


def test_cli_fit_max_bank(tmp_path, monkeypatch):
    from oodkit.cli import main

    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "m.pt", fixed_model(seed=2))
    run = CliRunner().invoke
    bad = run(main, ["fit", "--model", "m.pt", "--data", "digits-0to4", "--detectors", "features", "--max-bank", "3",
                     "--out", "d.npz", "--quiet"])
    assert bad.exit_code == 2 and "max_bank=3 must exceed n_neighbors=5" in bad.output
    assert not (tmp_path / "d.npz").exists()
    ok = run(main, ["fit", "--model", "m.pt", "--data", "digits-0to4", "--detectors", "features,profile",
                    "--max-bank", "64", "--out", "d.npz", "--quiet"])
    assert ok.exit_code == 0, ok.output
    with np.load(tmp_path / "d.npz") as f:
        assert sorted(f[k].shape[0] for k in f.files if k.endswith("train_z")) == [64, 64]
    assert all(load_detector(tmp_path / "d.npz", name=n).max_bank == 64 for n in ("features", "profile"))
    assert f"{MAX_BANK:,}" in run(main, ["fit", "--help"]).output  # the help states the real default


def test_the_torch_block_search_gives_the_distances_of_scikit_learns_search():
    """The exact search a GPU runs (float32 matrix products in blocks, a margin of extra
    candidates, float64 distances after), run here on the CPU: the same distances as
    scikit-learn's search, duplicated rows and a block edge included."""
    rng = np.random.default_rng(8)
    z = rng.standard_normal((2500, 12)) * 30 + 100  # large norms: float32 rounding at its worst
    z[1000:1010] = z[:10]  # exact duplicates: ties between neighbours
    q = np.concatenate([rng.standard_normal((1500, 12)) * 30 + 100, z[:5]])
    for max_bank in (None, 800):
        sk = KNNBank(5, max_bank).fit(z, "test")
        tb = KNNBank(5, max_bank, search_device="cpu").fit(z, "test")
        tb.search_.block = 700  # several query blocks
        np.testing.assert_array_equal(tb.distance(q), sk.distance(q))
        np.testing.assert_array_equal(tb.train_distance(z), sk.train_distance(z))


def test_a_cdm_detector_searches_on_its_models_device():
    from oodkit.detectors.cdm import _search_device

    assert _search_device(fixed_model(seed=1)) is None  # a CPU model: scikit-learn's search
    det = make_detector("fused", model=fixed_model(seed=1, rotations=4))
    det.fit(as_images(load_dataset("digits-0to4", "train").images)[:60])
    banks = [c.bank for c in det.scorer_.components.values() if hasattr(c, "bank")]
    assert len(banks) == 2 and all(b.search_device is None for b in banks)
