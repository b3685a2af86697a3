"""What the one-pair study scripts (feature_layers.py, fusion_variants.py) share: their
command line, the image sets and model it names (the subsamples and alignment of `oodkit
bench` with the same flags), and one JSON file that collects several runs."""
import argparse
import json
import os
from pathlib import Path

from oodkit.bench import load_sets, parse_spec
from oodkit.pretrained import load_model


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("spec")
    ap.add_argument("model")
    ap.add_argument("--data-root", default=os.environ.get("OODKIT_DATA"),
                    help="data folder (default: $OODKIT_DATA)")
    ap.add_argument("--jpeg-ood", type=int, default=None)
    ap.add_argument("--max-train", type=int, default=10000)
    ap.add_argument("--max-test", type=int, default=None)
    ap.add_argument("--json", default=None, help="add this run's results to this file")
    return ap


def sets_and_model(a):
    sets = load_sets(parse_spec(a.spec), a.data_root, jpeg_ood=a.jpeg_ood, max_train=a.max_train,
                     max_test=a.max_test)
    return sets, load_model(a.model)


def add_run(path, key: str, entry: dict, merge: bool = False) -> None:
    """Put ``entry`` under ``key`` in the JSON file at ``path`` (other keys kept); with
    ``merge``, add its per-set results to those already there (a second run of other
    variants). A run of another model on the same pair goes under ``"KEY @ MODEL"``."""
    path = Path(path)
    runs = json.loads(path.read_text()) if path.exists() else {}
    if key in runs and runs[key].get("model") != entry.get("model"):
        key = f"{key} @ {entry.get('model')}"
    if merge and key in runs:
        for o, r in entry["auroc"].items():
            runs[key]["auroc"].setdefault(o, {}).update(r)
    else:
        runs[key] = entry
    path.write_text(json.dumps(runs, indent=1) + "\n")
