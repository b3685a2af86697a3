"""Which signals `fused` combines, and by which rule: AUROC of fusion variants on one
benchmark pair, every variant fitted on ID training images only, from one forward pass
per image set (the same subsamples and alignment as `oodkit bench` with the same flags).

    python benchmarks/fusion_variants.py SPEC MODEL [--jpeg-ood 75] [--max-train N] [--max-test N]
        [--variants A,B,C,D,E] [--data-root DATA] [--json OUT]

Variants (Fisher's rule `sum log p`, and the minimum p-value, Tippett's rule, on the
same p-values): A profile + complexity + kNN features; B profile + complexity +
Mahalanobis features (the default since 2026-11-26; A on a model with a class head); C both feature scores; D profile +
Mahalanobis features; E B + the likelihood itself; for a CDM with a class head
(`oodkit train --class-head`), F profile + complexity + the class head's energy and G B +
energy; for a CDM with a rotation head (`--rotation-head`), H A + the upright score,
I B + upright, J profile + kNN features + upright. Prints JSON: {ood set: {variant: AUROC}} plus each component alone.
"""
import json

import numpy as np

import study_args
from oodkit.bench import aligned_groups
from oodkit.detectors import TABLE
from oodkit.detectors.scores import (Complexity, Energy, FeatureGauss, FeatureKNN, Fused, LogLik, MaxSoftmax, Profile,
                                     Upright, profile_levels)
from oodkit.metrics import auroc
from oodkit.models import has_class_head, has_rotation_head
from oodkit.representation import represent

VARIANTS = {"A": ["profile", "complexity", "knn"], "B": ["profile", "complexity", "gauss"],
            "C": ["profile", "complexity", "knn", "gauss"], "D": ["profile", "gauss"],
            "E": ["profile", "complexity", "gauss", "loglik"],
            "F": ["profile", "complexity", "energy"], "G": ["profile", "complexity", "gauss", "energy"],
            "H": ["profile", "complexity", "knn", "upright"], "I": ["profile", "complexity", "gauss", "upright"],
            "J": ["profile", "knn", "upright"]}
CLASS_HEAD = {n for n, d in TABLE.items() if d.labelled}  # components that need a class head
ROTATION_HEAD = {n for n, d in TABLE.items() if d.rotation}  # ... a rotation head


def main():
    ap = study_args.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default=None, help="default: A-E, and F, G for a model with a class head")
    a = ap.parse_args()
    sets, model = study_args.sets_and_model(a)
    labelled, rotation = has_class_head(model), has_rotation_head(model)
    variants = a.variants.split(",") if a.variants else [
        v for v in VARIANTS if (labelled or not CLASS_HEAD & set(VARIANTS[v]))
        and (rotation or not ROTATION_HEAD & set(VARIANTS[v]))]
    c, h, _ = model.image_shape
    levels = profile_levels(model.T, model.schedule.alpha_bar.numpy(), 20)

    def components():
        comps = {"profile": Profile(levels, "knn", 5, seed=0), "complexity": Complexity(),
                 "knn": FeatureKNN(5), "gauss": FeatureGauss(), "loglik": LogLik()}
        comps = {**comps, "energy": Energy(), "msp": MaxSoftmax()} if labelled else comps
        return {**comps, "upright": Upright()} if rotation else comps

    res = {}
    for _, _, x_train, x_id, x_oods in aligned_groups(sets, h, c):  # fitted as the pair's test images are aligned
        names = list(x_oods)
        rep_train = represent(model, x_train, progress=False)
        rep_id = represent(model, x_id, progress=False)
        reps = {o: represent(model, x, progress=False) for o, x in x_oods.items()}
        for v in variants:
            comps = components()
            fused = Fused({k: comps[k] for k in VARIANTS[v]}).fit(rep_train)
            parts_id = fused.parts(rep_id)
            for o in names:
                parts_ood = fused.parts(reps[o])
                res.setdefault(o, {})[f"{v} fisher"] = round(auroc(fused.score(rep_id), fused.score(reps[o])), 4)
                res[o][f"{v} tippett"] = round(auroc(np.min(list(parts_id.values()), 0),
                                                     np.min(list(parts_ood.values()), 0)), 4)
        for k, comp in components().items():
            comp.fit(rep_train)
            for o in names:
                res[o][k] = round(auroc(comp.score(rep_id), comp.score(reps[o])), 4)
    print(json.dumps({"spec": a.spec, "model": a.model, "auroc": res}, indent=1))
    if a.json:  # one file for several runs, keyed by spec; a second run's variants are added
        study_args.add_run(a.json, a.spec, {"spec": a.spec, "model": a.model, "auroc": res}, merge=True)

if __name__ == "__main__":
    main()
