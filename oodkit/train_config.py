"""The optimisation settings of a training run: one dataclass, the single source of the
defaults that ``oodkit train``'s options, :func:`oodkit.fit_model` and resumed runs read.
No torch here, so that the command's help can show them without loading it."""
from __future__ import annotations

import numbers
from dataclasses import dataclass, fields

__all__ = ["TrainConfig", "MAX_SEED"]

MAX_SEED = 2**63 - 1  # what torch.manual_seed and numpy's generators both take
# the fields' annotations (strings here) -> what a value must be; numpy's numbers count
_TYPES = {"int": (numbers.Integral, "an integer"), "float": (numbers.Real, "a number"), "bool": (bool, "True or False")}


@dataclass
class TrainConfig:
    """Optimisation settings. ``steps`` counts optimizer steps in all (a resumed run
    continues up to it); ``batch_size`` is the global batch, split across DDP ranks."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    warmup: int = 100
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    hflip: bool = False
    amp: bool = True  # bf16 autocast where the device runs bf16 natively (see bf16_supported)
    save_every: int = 500
    seed: int = 0

    def validate(self) -> "TrainConfig":
        """One-line ValueErrors for settings that cannot train (a negative clip would
        ascend the gradient, a decay of 1 would freeze the EMA) or are of the wrong type
        (1.5 steps, a flag given as "no")."""
        for f in fields(self):
            v = getattr(self, f.name)
            want, what = _TYPES[f.type]
            if not isinstance(v, want) or (f.type != "bool" and isinstance(v, bool)):
                raise ValueError(f"{f.name} must be {what}, got {v!r} ({type(v).__name__})")
        checks = [("steps", self.steps >= 1, "at least 1"), ("batch_size", self.batch_size >= 1, "at least 1"),
                  ("lr", 0 < self.lr <= 1, "in (0, 1]"), ("warmup", self.warmup >= 0, "0 or more"),
                  ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1)"),
                  ("grad_clip", self.grad_clip >= 0, "0 (off) or positive"),
                  ("save_every", self.save_every >= 0, "0 or more"),
                  ("seed", 0 <= self.seed <= MAX_SEED, f"in 0..{MAX_SEED}")]
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"{name} must be {want}, got {getattr(self, name)!r}")
        if self.warmup > self.steps:
            import warnings

            warnings.warn(f"the warm-up of {self.warmup} steps is longer than the run ({self.steps} steps): the "
                          f"learning rate never reaches {self.lr:g}; lower the warm-up", stacklevel=2)
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
