"""Scores derived from a :class:`~oodkit.representation.Representation` (one forward
pass). Each scorer has ``fit(rep)`` on in-distribution training data and
``score(rep) -> float64 (N,)``, higher = more in-distribution."""
from __future__ import annotations

import math

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler


__all__ = ["SCORERS", "profile_levels"]


class LogLik:
    """Eq. 10 log-likelihood ``log p(x)``, nats."""

    def fit(self, rep):
        return self

    def score(self, rep):
        return rep.loglik


class Posterior:
    """``log p(t = 0 | x)``: how sure the noise classifier is that the input is clean."""

    def fit(self, rep):
        return self

    def score(self, rep):
        return rep.log_posterior()[:, 0]


class ExpectedT:
    """Minus the posterior mean noise level ``E[t | x]``: ID inputs look clean."""

    def fit(self, rep):
        return self

    def score(self, rep):
        post = np.exp(rep.log_posterior())
        return -(post @ np.arange(post.shape[1], dtype=np.float64))


class Typicality:
    """Minus the distance of ``log p(x)`` from its in-distribution training mean
    (the typicality test with batch size 1)."""

    def fit(self, rep):
        self.mean_ = float(np.mean(rep.loglik))
        return self

    def get_state(self):
        return {"mean": np.float64(self.mean_)}

    def set_state(self, st):
        self.mean_ = float(st["mean"])
        return self

    def score(self, rep):
        return -np.abs(rep.loglik - self.mean_)


class Complexity:
    """``log2 p(x) + L(x)``, bits: the likelihood ratio against a generic lossless
    compressor (PNG), after Serra et al. (2020). Simple inputs that every model finds
    likely are no longer favoured."""

    def fit(self, rep):
        return self

    def score(self, rep):
        return rep.loglik / math.log(2) + rep.png_bits


def profile_levels(schedule_T: int, alpha_bar: np.ndarray, n_levels: int) -> np.ndarray:
    """``n_levels`` levels spread evenly in noise standard deviation ``sqrt(1 - abar)``
    from clean (t = 0) to the noisiest level T: even steps in what the classifier sees,
    whatever the schedule."""
    sigma = np.sqrt(np.clip(1.0 - alpha_bar[: schedule_T + 1], 0, None))
    targets = np.linspace(0.0, sigma[-1], n_levels)
    idx = np.unique(np.abs(sigma[None, :] - targets[:, None]).argmin(axis=1))
    return idx


class Profile:
    """The multiscale likelihood profile ``log p_t(x) / d`` over a subsample of levels,
    standardised, under a density model fitted on ID training profiles:

    * ``density="knn"``: kNN log-density up to a constant, ``-D log r_k`` (r_k the
      distance to the k-th nearest training profile, D the number of levels);
    * ``density="gmm"``: a full-covariance Gaussian mixture's log-density.
    """

    def __init__(self, levels: np.ndarray, density="knn", n_neighbors=5, n_components=10, seed=0):
        if density not in ("knn", "gmm"):
            raise ValueError(f"density must be 'knn' or 'gmm', got {density!r}")
        self.levels, self.density = np.asarray(levels), density
        self.n_neighbors, self.n_components, self.seed = n_neighbors, n_components, seed

    def features(self, rep):
        return rep.levels(self.levels) / rep.dim

    def fit(self, rep):
        z = self.features(rep)
        self.scaler_ = StandardScaler().fit(z)
        z = self.scaler_.transform(z)
        if self.density == "knn":
            if len(z) <= self.n_neighbors:
                raise ValueError(f"profile/knn needs more than {self.n_neighbors} training images, got {len(z)}")
            self.nn_ = NearestNeighbors(n_neighbors=self.n_neighbors + 1).fit(z)
            self._train_z = z
        else:
            k = min(self.n_components, len(z))
            self.gmm_ = GaussianMixture(k, covariance_type="full", reg_covar=1e-3, random_state=self.seed).fit(z)
        return self

    def get_state(self):
        st = {"scaler_mean": self.scaler_.mean_, "scaler_scale": self.scaler_.scale_}
        if self.density == "knn":
            st["train_z"] = self._train_z
        else:
            st.update(weights=self.gmm_.weights_, means=self.gmm_.means_, covariances=self.gmm_.covariances_)
        return st

    def set_state(self, st):
        self.scaler_ = StandardScaler()
        self.scaler_.mean_, self.scaler_.scale_ = np.asarray(st["scaler_mean"]), np.asarray(st["scaler_scale"])
        self.scaler_.var_ = self.scaler_.scale_ ** 2
        self.scaler_.n_features_in_ = len(self.scaler_.mean_)
        if self.density == "knn":
            self._train_z = np.asarray(st["train_z"])
            self.nn_ = NearestNeighbors(n_neighbors=self.n_neighbors + 1).fit(self._train_z)
        else:
            from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

            g = GaussianMixture(len(st["weights"]), covariance_type="full")
            g.weights_, g.means_, g.covariances_ = (np.asarray(st[k]) for k in ("weights", "means", "covariances"))
            g.precisions_cholesky_ = _compute_precision_cholesky(g.covariances_, "full")
            self.gmm_ = g
        return self

    def score(self, rep, _is_train=False):
        z = self.scaler_.transform(self.features(rep))
        if self.density == "gmm":
            return self.gmm_.score_samples(z).astype(np.float64)
        dist, _ = self.nn_.kneighbors(z, n_neighbors=self.n_neighbors + (1 if _is_train else 0))
        r = np.maximum(dist[:, -1], 1e-12)
        return -z.shape[1] * np.log(r)

    def train_score(self, rep):
        """Leave-one-out scores of the training profiles (a point is not its own neighbour)."""
        return self.score(rep, _is_train=True)


def _need_features(rep):
    if rep.features is None:
        raise ValueError("this model's network does not return pooled features; feature scores need oodkit's UNet")
    return rep.features.double().numpy()


def _l2(z):
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


class FeatureKNN:
    """Deep nearest neighbours (Sun et al., 2022) on the pooled decoder output the noise
    classifier's head reads, from the same forward pass: minus the distance of the
    L2-normalised feature to its k-th nearest ID training feature."""

    def __init__(self, n_neighbors=5):
        self.n_neighbors = n_neighbors

    def fit(self, rep):
        z = _l2(_need_features(rep))
        if len(z) <= self.n_neighbors:
            raise ValueError(f"features/knn needs more than {self.n_neighbors} training images, got {len(z)}")
        self.nn_ = NearestNeighbors(n_neighbors=self.n_neighbors + 1).fit(z)
        self._train_z = z
        return self

    def get_state(self):
        return {"train_z": self._train_z}

    def set_state(self, st):
        self._train_z = np.asarray(st["train_z"])
        self.nn_ = NearestNeighbors(n_neighbors=self.n_neighbors + 1).fit(self._train_z)
        return self

    def score(self, rep, _is_train=False):
        dist, _ = self.nn_.kneighbors(_l2(_need_features(rep)), n_neighbors=self.n_neighbors + (1 if _is_train else 0))
        return -dist[:, -1]

    def train_score(self, rep):
        return self.score(rep, _is_train=True)


class FeatureGauss:
    """Minus the squared Mahalanobis distance of the pooled features to one Gaussian
    fitted on ID training features (Ledoit-Wolf shrinkage; label-free). The features are
    not L2-normalised (unlike kNN's): the Gaussian models their scale, and their norm
    separates far-OOD sets (benchmarks/results/feature_layers.md)."""

    def fit(self, rep):
        from sklearn.covariance import LedoitWolf

        self.cov_ = LedoitWolf().fit(_need_features(rep))
        return self

    def get_state(self):
        return {"location": self.cov_.location_, "covariance": self.cov_.covariance_}

    def set_state(self, st):
        from sklearn.covariance import EmpiricalCovariance

        self.cov_ = EmpiricalCovariance()
        self.cov_._set_covariance(np.asarray(st["covariance"]))
        self.cov_.location_ = np.asarray(st["location"])
        return self

    def score(self, rep):
        return -self.cov_.mahalanobis(_need_features(rep))

    def train_score(self, rep):
        """Leave-one-out scores of the training images: each one's distance to the
        Gaussian fitted on the others (in closed form, at the fitted shrinkage), so that
        p-values and thresholds built on them match fresh ID images; in-sample
        Mahalanobis distances are optimistic by O(dim / n)."""
        z = _need_features(rep)
        n, dim = z.shape
        u = z - z.mean(0)
        emp = u.T @ u / n
        alpha, mu = self.cov_.shrinkage_, np.trace(emp) / dim
        # without image i the shrunk covariance is A - c u_i u_i^T (Sherman-Morrison)
        a_mat = (1 - alpha) * n / (n - 1) * emp + alpha * mu * np.eye(dim)
        a = np.einsum("ij,ij->i", np.linalg.solve(a_mat, u.T).T, u)
        c = (1 - alpha) * n / (n - 1) ** 2
        return -((n / (n - 1)) ** 2) * a / (1 - c * a)


def class_score(logits, score: str):
    """``"msp"``: the maximum softmax probability (Hendrycks & Gimpel, 2017); ``"energy"``:
    ``logsumexp`` of the logits, minus the free energy (Liu et al., 2020), nats. ``logits``
    (N, K) torch tensor -> float64 (N,) tensor. Shared by every model with a class head."""
    import torch

    logits = logits.double()
    return torch.softmax(logits, dim=1).max(dim=1).values if score == "msp" else torch.logsumexp(logits, dim=1)


class _ClassHead:
    """A labelled CDM's class-head score, from the same forward pass."""

    score_name = ""

    def fit(self, rep):
        return self

    def score(self, rep):
        if rep.class_logits is None:
            raise ValueError("this CDM has no class head: msp and energy need one trained on labels "
                             "(oodkit train --class-head)")
        return class_score(rep.class_logits, self.score_name).numpy()


class MaxSoftmax(_ClassHead):
    score_name = "msp"


class Energy(_ClassHead):
    score_name = "energy"


class Fused:
    """Complementary single-pass signals combined without weights: each component's
    score becomes a p-value against its own ID training scores (leave-one-out where the
    component is a neighbour method), and the p-values combine by Fisher's rule,
    ``sum_i log p_i`` (higher = more ID). Below the smallest training score a p-value
    continues as an exponential tail in units of the training scores' standard
    deviation, so that far-OOD inputs stay ranked instead of tying. Only ID data fit it,
    and no signal dominates by its scale."""

    def __init__(self, components: dict):
        self.components = components

    def fit(self, rep):
        self.ref_, raw = {}, {}
        for name, c in self.components.items():
            c.fit(rep)
            raw[name] = np.asarray(c.train_score(rep) if hasattr(c, "train_score") else c.score(rep), np.float64)
            self.ref_[name] = (np.sort(raw[name]), float(np.std(raw[name])) or 1.0)
        # the threshold asks for these right after fit (train_score on the same rep): handed
        # over once rather than recomputed (a kNN query over the training set)
        self._pending = (id(rep), self._loo_total(raw))
        return self

    def _loo_total(self, raw: dict) -> np.ndarray:
        total = 0.0
        for name, r in raw.items():
            ref = self.ref_[name][0]
            total = total + np.log(np.maximum(np.searchsorted(ref, r, side="right"), 1) / len(ref))
        return total

    def get_state(self):
        st = {}
        for name, c in self.components.items():
            st.update({f"{name}.{k}": v for k, v in (c.get_state() if hasattr(c, "get_state") else {}).items()})
            st[f"{name}.ref"], st[f"{name}.scale"] = self.ref_[name][0], np.float64(self.ref_[name][1])
        return st

    def set_state(self, st):
        fitted = [k[:-len(".ref")] for k in st if k.endswith(".ref")]
        if sorted(fitted) != sorted(self.components):
            raise ValueError(f"fitted on the components {', '.join(fitted) or '(none)'}; this model's fused reads "
                             f"{', '.join(self.components)} (features: Mahalanobis, features-knn: kNN): "
                             "refit it with `oodkit fit`")
        self.ref_ = {}
        for name, c in self.components.items():
            sub = {k[len(name) + 1:]: v for k, v in st.items() if k.startswith(name + ".")}
            if hasattr(c, "set_state"):
                c.set_state(sub)
            self.ref_[name] = (np.asarray(sub["ref"]), float(sub["scale"]))
        return self

    @staticmethod
    def _log_p(s, ref, scale):
        n = len(ref)
        below = np.searchsorted(ref, s, side="right")  # training scores <= s
        log_p = np.log((below + 1.0) / (n + 1.0))
        tail = s < ref[0]
        log_p[tail] = np.log(1.0 / (n + 1.0)) + (s[tail] - ref[0]) / scale
        return log_p

    def parts(self, rep) -> dict:
        """Each component's log p-value, (N,) float64."""
        return {name: self._log_p(np.asarray(c.score(rep), dtype=np.float64), *self.ref_[name])
                for name, c in self.components.items()}

    def score(self, rep):
        return np.sum(list(self.parts(rep).values()), axis=0)

    def train_score(self, rep):
        """Leave-one-out scores of the training images (for the threshold): each image's
        p-value is its rank among the other training images' reference scores."""
        pending = self.__dict__.pop("_pending", None)
        if pending is not None and pending[0] == id(rep):
            return pending[1]
        return self._loo_total({name: np.asarray(c.train_score(rep) if hasattr(c, "train_score") else c.score(rep),
                                                 np.float64) for name, c in self.components.items()})


SCORERS = {
    "loglik": LogLik,
    "posterior": Posterior,
    "expected-t": ExpectedT,
    "typicality": Typicality,
    "complexity": Complexity,
    "profile": Profile,
    "features": FeatureKNN,
    "features-gauss": FeatureGauss,
    "fused": Fused,
    "msp": MaxSoftmax,
    "energy": Energy,
}
