"""Held-out-class splits (near-OOD) and OOD groups."""
import numpy as np
import pytest

from oodkit.bench import parse_spec
from oodkit.data import load_dataset
from oodkit.data.registry import ood_group, parse_classes


def test_class_subsets_select_exactly_those_classes():
    full = load_dataset("digits", "train")
    sub = load_dataset("digits[0-2+7]", "train")
    assert set(np.unique(sub.labels)) == {0, 1, 2, 7} and sub.name == "digits[0-2+7]"
    assert len(sub) == np.isin(full.labels, [0, 1, 2, 7]).sum()
    assert parse_classes("cifar10[6-9]") == ("cifar10", [6, 7, 8, 9]) and parse_classes("mnist") == ("mnist", None)
    with pytest.raises(ValueError, match=r"NAME\[0-5\]"):
        load_dataset("digits[a-b]", "train")
    with pytest.raises(ValueError, match="no class 42"):
        load_dataset("digits[42]", "train")


def test_groups_and_the_near_suites():
    assert ood_group("cifar10[0-5]", "cifar10[6-9]") == "near"
    assert ood_group("cifar10", "cifar100") == "near" and ood_group("cifar10", "svhn") == "far"
    assert ood_group("fashionmnist", "noise") == "synthetic"
    assert ood_group("digits-0to4", "digits-5to9") == "near" and ood_group("digits-0to4", "letters") == "far"
    spec = parse_spec("cifar10-near")
    assert spec.id == "cifar10[0-5]" and spec.oods == ["cifar10[6-9]"]


def test_jpeg_round_trip_skips_ood_sets_from_the_id_source():
    """--jpeg-ood re-encodes OOD sets from another source like a JPEG copy of the ID
    set; held-out classes of the ID set already share its encoding, and a second round
    trip would hand detectors a compression artefact to find."""
    from oodkit.bench import load_sets
    from oodkit.data.images import jpeg_roundtrip

    sets = load_sets(parse_spec("digits[0-4]-vs-digits[5-9],letters"), jpeg_ood=75, max_test=50,
                     echo=lambda *a: None)
    plain = load_sets(parse_spec("digits[0-4]-vs-digits[5-9],letters"), max_test=50, echo=lambda *a: None)
    assert np.array_equal(sets.oods["digits[5-9]"].images, plain.oods["digits[5-9]"].images)
    assert np.array_equal(sets.oods["letters"].images, jpeg_roundtrip(plain.oods["letters"].images, 75))
    # the registered digits suite: both sides are views of scikit-learn's digits
    suite = load_sets(parse_spec("digits"), jpeg_ood=75, max_test=50, echo=lambda *a: None)
    assert np.array_equal(suite.oods["digits-5to9"].images,
                          load_sets(parse_spec("digits"), max_test=50, echo=lambda *a: None).oods["digits-5to9"].images)
