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


SCORERS = {
    "loglik": LogLik,
    "posterior": Posterior,
    "expected-t": ExpectedT,
    "typicality": Typicality,
    "complexity": Complexity,
    "profile": Profile,
}
