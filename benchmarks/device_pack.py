"""Get the near-OOD GPU run (``benchmarks/gpu_session.sh``) onto a lent GPU machine, whose
tool sends the working tree and at most 64 MiB in all.

    python benchmarks/device_pack.py pack --source ../shared/data     # here: writes devpack/
    python benchmarks/device_pack.py slim                              # here: before the device call
    python benchmarks/device_pack.py unslim                            # here: after it
    python benchmarks/device_pack.py unpack devpack DATA_DIR           # there (gpu_session.sh does it)
    python benchmarks/device_pack.py ship CKPT OUT.pt DATA_DIR DEVICE  # there: export, test bits/dim

``pack`` writes ``devpack/`` (git-ignored through .git/info/exclude): the publisher's
JPEG bytes of the CIFAR-10 training images of classes 0-5 and of every test image (the
bytes themselves, so they decode to the pixels ``materialize.py`` gives), the MNIST and
Fashion-MNIST test arrays for the far pairs, and the shipped ``cifar10[0-5]`` weights to
fine-tune from (about 45 MB). ``slim`` takes the large committed files (resumable
checkpoints, benchmark results, shipped detectors) out of git's index and out of the
working tree (into the git directory) so that they stay behind, and ``unslim`` moves them
back and puts the index back as HEAD has it: commit first, since staged changes are
undone with it.
"""
import argparse
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

CLASSES = range(6)  # the ID classes of the cifar10-near suite
# what does not travel to the GPU: resumable checkpoints, benchmark results and the shipped
# detectors of the grey-scale models (the shipped weights travel, 11 MB, for
# gpu_throughput.py, and so do the detectors of cifar10, cifar10[0-5] and digits-0to4, 6.5 MB,
# for precision_check.py; the tool sends 64 MiB at most)
STAY_BEHIND = ["benchmarks/models", "benchmarks/results", "oodkit/weights/mnist.detectors.npz",
               "oodkit/weights/fashionmnist*.detectors.npz"]


def pack(source: Path, out: Path) -> None:
    from oodkit.pretrained import resolve_model

    out.mkdir(exist_ok=True)
    arc = np.load(source / "cifar10_jpeg.npz")
    offsets, labels, split = arc["offsets"], arc["labels"], arc["split"]
    keep = np.flatnonzero((split == 1) | ((split == 0) & np.isin(labels, list(CLASSES))))
    blob = arc["jpeg"]
    pieces = [blob[offsets[i]:offsets[i + 1]] for i in keep]
    new_offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int64)
    np.savez(out / "cifar10_jpeg.npz", jpeg=np.concatenate(pieces), offsets=new_offsets, labels=labels[keep],
             split=split[keep], classes=arc["classes"])
    for name in ("mnist_test.npz", "fashionmnist_test.npz"):
        shutil.copy(source / name, out / name)
    shutil.copy(resolve_model("cifar10[0-5]"), out / "cifar10_0-5.pt")
    exclude = _exclude_file()
    if "/devpack/" not in exclude.read_text():
        with exclude.open("a") as f:
            f.write("/devpack/\n")
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"wrote {out}/: {len(keep)} CIFAR-10 images ({int((split[keep] == 0).sum())} train), {size:.1f} MiB")


def unpack(pack_dir: Path, data: Path) -> None:
    from PIL import Image

    data.mkdir(parents=True, exist_ok=True)
    arc = np.load(pack_dir / "cifar10_jpeg.npz")
    blob, offsets = arc["jpeg"].tobytes(), arc["offsets"]
    for code, name in [(0, "train"), (1, "test")]:
        idx = np.flatnonzero(arc["split"] == code)
        images = np.stack([np.asarray(Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]])).convert("RGB"))
                           for i in idx])
        np.savez(data / f"cifar10_{name}.npz", images=images, labels=arc["labels"][idx])
        print(f"cifar10_{name}: {images.shape}")
    for name in ("mnist_test.npz", "fashionmnist_test.npz"):
        shutil.copy(pack_dir / name, data / name)


def ship(checkpoint: Path, out: Path, data: Path, device: str) -> None:
    """Export a trained checkpoint as shipped (EMA, half precision) and print its test bits/dim
    on every test image of the set it was trained on, in full fp32."""
    import torch

    from oodkit.data import as_images, load_dataset
    from oodkit.pretrained import export_model, load_model
    from oodkit.representation import full_fp32

    rec = export_model(checkpoint, out)
    model = load_model(out, device=device)
    x = as_images(load_dataset(model.data_info["dataset"], "test", data).images)
    with full_fp32():
        bpd = torch.cat([model.bpd(x[i:i + 500]).cpu() for i in range(0, len(x), 500)])
    print(f"{out}: {rec['steps']} steps, test bits/dim {bpd.mean().item():.4f} on {len(x)} images "
          f"(sha256 {rec['sha256'][:12]})")


def _git(*args) -> None:
    subprocess.run(["git", *args], check=True)


def _exclude_file() -> Path:
    path = Path(subprocess.run(["git", "rev-parse", "--git-path", "info/exclude"], check=True, capture_output=True,
                               text=True).stdout.strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def _stash() -> Path:
    """Where ``slim`` parks the files that stay behind: inside the git directory, which the
    device tool does not send, on the same disk (moves are renames)."""
    return Path(subprocess.run(["git", "rev-parse", "--git-path", "devpack-stash"], check=True, capture_output=True,
                               text=True).stdout.strip())


def slim() -> None:
    """Untrack the files of STAY_BEHIND and move them out of the working tree. Ignore rules
    cannot do it: the repository's .gitignore re-includes ``*.pt`` under benchmarks/models
    and oodkit/weights, and a .gitignore outranks .git/info/exclude, so untracked files
    there would still travel."""
    files = subprocess.run(["git", "ls-files", "-z", "--", *STAY_BEHIND], check=True, capture_output=True,
                           text=True).stdout.split("\0")
    files = [f for f in files if f]
    stash = _stash()
    _git("rm", "-r", "-q", "--cached", "--", *files)
    for f in files:
        (stash / f).parent.mkdir(parents=True, exist_ok=True)
        Path(f).rename(stash / f)
    size = sum(Path(f).stat().st_size for f in subprocess.run(
        ["git", "ls-files", "-z"], check=True, capture_output=True, text=True).stdout.split("\0") if f and Path(f).exists())
    print(f"slim: {len(files)} files of {', '.join(STAY_BEHIND)} moved to {stash}; the tracked tree is now "
          f"{size / 2**20:.1f} MiB (plus devpack/); run `unslim` after the device call")


def unslim() -> None:
    """Move the parked files back and give the index HEAD's state again."""
    stash = _stash()
    moved = 0
    if stash.exists():
        for f in sorted(p for p in stash.rglob("*") if p.is_file()):
            dest = Path(f.relative_to(stash))
            dest.parent.mkdir(parents=True, exist_ok=True)
            f.rename(dest)
            moved += 1
        shutil.rmtree(stash)
    _git("reset", "-q")
    print(f"unslim: {moved} files back; the index is HEAD's again")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--source", type=Path, required=True, help="the folder of cifar10_jpeg.npz and the MNIST arrays")
    p.add_argument("--out", type=Path, default=Path("devpack"))
    u = sub.add_parser("unpack")
    u.add_argument("pack_dir", type=Path)
    u.add_argument("data", type=Path)
    s = sub.add_parser("ship")
    s.add_argument("checkpoint", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("data", type=Path)
    s.add_argument("device")
    sub.add_parser("slim")
    sub.add_parser("unslim")
    a = ap.parse_args()
    if a.cmd == "pack":
        pack(a.source, a.out)
    elif a.cmd == "unpack":
        unpack(a.pack_dir, a.data)
    elif a.cmd == "ship":
        ship(a.checkpoint, a.out, a.data, a.device)
    else:
        {"slim": slim, "unslim": unslim}[a.cmd]()


if __name__ == "__main__":
    sys.exit(main())
