"""The estimator contract on every entry of the detector table, each on the model kind it
prefers: fit, scores, thresholds, predict, clone, its table name, and a state round trip
(get_state -> set_state) that scores identically."""
import numpy as np
import pytest
from sklearn.base import clone

from oodkit.data import as_images, load_dataset
from oodkit.detectors import TABLE, make_detector
from oodkit.detectors.table import table_name


@pytest.fixture(scope="module")
def images():
    return {"train": as_images(load_dataset("digits-0to4", "train").images)[:60],
            "test": as_images(load_dataset("letters", "test").images)[:12]}


# the multi-pass scores at a cost a test can pay
CHEAP = {"n_terms": 4, "n_points": 4, "n_offset": 20, "n_levels": 6}


@pytest.mark.parametrize("name", list(TABLE))
def test_every_table_entry_keeps_the_estimator_contract(name, images, tiny_models):
    info = TABLE[name]
    model = tiny_models[info.kinds[0]]
    cheap = {k: v for k, v in CHEAP.items() if k not in info.params}  # the table's own values stay
    det = make_detector(name, model=model, **cheap)
    assert table_name(det) == name
    if "n_terms" in info.params:
        det.set_params(n_terms=4)
    params = lambda d: {k: v for k, v in d.get_params().items() if k != "model"}  # clone copies the model
    assert params(clone(det)) == params(det)
    det.fit(images["train"])
    s = det.score_samples(images["test"])
    assert s.dtype == np.float64 and s.shape == (len(images["test"]),) and np.isfinite(s).all()
    assert np.isin(det.offset_, det.calibration_scores_)
    np.testing.assert_allclose(det.decision_function(images["test"]), s - det.offset_)
    np.testing.assert_array_equal(det.predict(images["test"]) == 1, s >= det.offset_)
    p = det.pvalues(images["test"])
    assert ((p > 0) & (p <= 1)).all()
    # what fit learned, handed to a fresh detector of the same parameters
    back = type(det)(**{**det.get_params()}).set_state(det.get_state(), det.model_)
    np.testing.assert_array_equal(back.score_samples(images["test"]), s)
    assert back.offset_ == det.offset_
    # a score without ID statistics is ready without them; one with them refuses
    if info.fitted:
        with pytest.raises(ValueError, match="fits ID statistics"):
            make_detector(name, model=model, **cheap).prepare()
    else:
        np.testing.assert_array_equal(make_detector(name, model=model, **cheap).set_params(
            **{k: v for k, v in det.get_params().items() if k != "model"}).prepare().score_samples(images["test"]), s)
