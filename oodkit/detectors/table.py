"""The detector table: one record per registered detector, the only list of detectors.
The registry, the model kinds each detector runs on, what it needs, the default detectors
of ``oodkit bench`` / ``fit`` / ``score`` and the CLI help are all read from
:data:`TABLE`. It names detector families, not classes, so that the detector modules can
read it without a circle (:mod:`oodkit.detectors.registry` maps families to classes).

Adding a detector: one entry here and, for a one-pass CDM score, one scorer in
:data:`oodkit.detectors.scores.SCORERS` (the README's contributor section walks through
one)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..models import has_class_head, has_rotation_head

__all__ = ["DetectorInfo", "TABLE", "detector_kinds", "head_requirement", "HEADS", "default_detectors",
           "model_default_detectors", "describe_detectors", "family_kinds", "table_name"]


@dataclass(frozen=True)
class DetectorInfo:
    """``kinds``: model kinds it runs on, preferred first (with several models in a
    benchmark it runs on the first given model of the first kind). ``cls``: the detector
    class, or ``{kind: class}`` where kinds compute the score differently (a labelled
    CDM's class head from its one pass, a joint model's from its encoder). ``fitted``:
    whether it fits statistics on ID training images beyond the threshold.
    ``default_for``: the model kinds whose default detector set includes it. ``units``
    of ``score_samples``. ``labelled``: runs only on a model trained with labels (a class
    head). ``rotation``: runs only on a CDM trained with a rotation head, and is in its
    defaults."""

    name: str
    family: str | dict
    params: dict
    kinds: tuple
    fitted: bool
    units: str
    summary: str
    default_for: tuple = field(default=())
    labelled: bool = False
    rotation: bool = False

    def family_for(self, kind: str | None = None) -> str:
        """The detector family that runs it on a ``kind`` model (the preferred kind's when
        None): ``"cdm"`` reads the one forward pass, ``"diffusion"`` runs its own passes."""
        if not isinstance(self.family, dict):
            return self.family
        return self.family[kind if kind in self.family else self.kinds[0]]

    @property
    def needs(self) -> tuple:
        """What it needs, in words: the pass it reads, a head, fitted ID statistics."""
        out = ["one CDM pass" if self.family_for(k) == "cdm" else f"{k} passes" for k in self.kinds]
        out += ["a class head"] * self.labelled + ["a rotation head"] * self.rotation
        return (*out, "ID statistics") if self.fitted else tuple(out)


_C, _D = "cdm", "diffusion"
TABLE: dict[str, DetectorInfo] = {d.name: d for d in [
    # CDM detectors first: one forward pass serves them all
    DetectorInfo("loglik", _C, {"score": "loglik"}, ("cdm",), False, "nats", "Eq. 10 log-likelihood", ("cdm",)),
    DetectorInfo("posterior", _C, {"score": "posterior"}, ("cdm",), False, "nats", "log p(t=0 | x)", ("cdm",)),
    DetectorInfo("expected-t", _C, {"score": "expected-t"}, ("cdm",), False, "levels", "minus E[t | x]", ("cdm",)),
    DetectorInfo("typicality", _C, {"score": "typicality"}, ("cdm",), True, "nats",
                 "minus |log p(x) - training mean|", ("cdm",)),
    DetectorInfo("complexity", _C, {"score": "complexity"}, ("cdm",), False, "bits",
                 "log2 p(x) + PNG bits (input complexity)", ("cdm",)),
    DetectorInfo("profile", _C, {"score": "profile", "density": "knn"}, ("cdm",), True, "log-density",
                 "kNN density of the multiscale likelihood profile", ("cdm",)),
    DetectorInfo("profile-gmm", _C, {"score": "profile", "density": "gmm"}, ("cdm",), True, "log-density",
                 "Gaussian-mixture density of the profile"),
    DetectorInfo("features", _C, {"score": "features"}, ("cdm",), True, "minus distance",
                 "deep kNN on the pooled decoder output the head reads (same pass)", ("cdm",)),
    DetectorInfo("features-gauss", _C, {"score": "features-gauss"}, ("cdm",), True, "minus Mahalanobis",
                 "Mahalanobis distance of the pooled decoder output"),
    DetectorInfo("fused", _C, {"score": "fused"}, ("cdm",), True, "sum of log p-values",
                 "profile + complexity + features-gauss, Fisher-combined ID p-values (with a class head kNN features; with a rotation head profile + kNN features + upright)", ("cdm",)),
    DetectorInfo("elbo", _D, {"score": "elbo"}, ("ddpm", "joint"), False, "bits/dim", "minus the exact ELBO (T passes)"),
    DetectorInfo("elbo-k", _D, {"score": "elbo", "n_terms": 50}, ("ddpm", "joint"), False, "bits/dim",
                 "minus the 50-term stratified ELBO", ("ddpm", "joint")),
    DetectorInfo("itd", _D, {"score": "itd"}, ("ddpm", "joint", "cdm"), False, "nats",
                 "log P(x), discrete information-theoretic estimate (64 passes)", ("ddpm", "joint")),
    DetectorInfo("recon", _D, {"score": "recon"}, ("ddpm", "joint"), False, "MSE",
                 "minus one-step reconstruction error", ("ddpm", "joint")),
    # class-head scores: a joint model's head, or a CDM trained with --class-head (same pass)
    DetectorInfo("msp", {"joint": _D, "cdm": _C}, {"score": "msp"}, ("joint", "cdm"), False, "probability",
                 "maximum softmax probability of the class head", ("joint",), labelled=True),
    DetectorInfo("energy", {"joint": _D, "cdm": _C}, {"score": "energy"}, ("joint", "cdm"), False, "nats",
                 "logsumexp of the class head's logits", ("joint",), labelled=True),
    # label-free rotation head: a CDM trained with --rotation-head (same pass)
    DetectorInfo("upright", _C, {"score": "upright"}, ("cdm",), False, "nats",
                 "log p(upright | x) of the rotation head (--rotation-head)", rotation=True),
]}

def detector_kinds(name: str) -> tuple:
    """Model kinds a registered detector can run on, preferred first. ``NAME@KIND``
    (e.g. ``itd@cdm``) names a detector pinned to one kind of model."""
    base, at, kind = name.partition("@")
    if at and not kind:
        raise ValueError(f"detector {name!r}: name a model kind after '@' (e.g. {base}@cdm) or drop the '@'")
    if base not in TABLE:
        raise ValueError(f"unknown detector {base!r}; choose from {', '.join(TABLE)}")
    kinds = TABLE[base].kinds
    if kind and kind not in kinds:
        raise ValueError(f"detector {base} runs on a {' or '.join(kinds)} model, not {kind!r}")
    return (kind,) if kind else kinds


# what a detector that runs only on a model with a given head needs: (wording, test)
HEADS = {"class": ("model with a class head (a joint model, or a CDM trained with --class-head)", has_class_head),
         "rotation": ("CDM with a rotation head (trained with --rotation-head)", has_rotation_head)}


def head_requirement(name: str):
    """``(wording, has_it(model))`` for a detector that runs only on a model with a
    class or rotation head; None for the others."""
    info = TABLE[name.partition("@")[0]]
    return HEADS["class"] if info.labelled else HEADS["rotation"] if info.rotation else None


def table_name(detector) -> str:
    """The table's name for a detector: the entry whose fixed parameters it has, the most
    specific one first (``profile-gmm`` for ``score="profile", density="gmm"``)."""
    params = detector.get_params()
    fitting = [d for d in TABLE.values() if all(params.get(k) == v for k, v in d.params.items())]
    if not fitting:
        return str(params.get("score", type(detector).__name__))
    return max(fitting, key=lambda d: len(d.params)).name


def family_kinds(family: str, score: str) -> tuple | None:
    """Model kinds on which ``family`` computes ``score`` (None: it does not)."""
    for d in TABLE.values():
        if d.params.get("score") == score and any(d.family_for(k) == family for k in d.kinds):
            return tuple(k for k in d.kinds if d.family_for(k) == family)
    return None


def default_detectors(kinds, labelled=(), rotation=()) -> list[str]:
    """The default detectors for models of these kinds, in table order. ``labelled``: the
    kinds among them whose model has a class head, which adds the class-head scores that
    run on those kinds (``msp`` and ``energy`` on a CDM trained with ``--class-head``);
    ``rotation``: the kinds whose model has a rotation head (``upright``)."""
    kinds, labelled, rotation = set(kinds), set(labelled), set(rotation)
    return [name for name, d in TABLE.items() if kinds & set(d.default_for) or (d.labelled and labelled & set(d.kinds))
            or (d.rotation and rotation & set(d.kinds))]


def model_default_detectors(models) -> list[str]:
    """:func:`default_detectors` for these loaded models."""
    models = list(models)
    return default_detectors((m.kind for m in models), (m.kind for m in models if has_class_head(m)),
                             (m.kind for m in models if has_rotation_head(m)))


def describe_detectors(width: int = 76) -> str:
    """One entry per detector, wrapped to ``width`` columns, for the CLI help."""
    import textwrap

    return "\n".join(textwrap.fill(f"{n}: {d.summary} [{d.units}; {'/'.join(d.kinds)}]", width,
                                   subsequent_indent="    ") for n, d in TABLE.items())
