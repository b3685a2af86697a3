"""Scores derived from a :class:`~oodkit.representation.Representation` (one forward
pass). Each scorer has ``fit(rep)`` on in-distribution training data and
``score(rep) -> float64 (N,)``, higher = more in-distribution."""
from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler


__all__ = ["SCORERS", "profile_levels", "state_array"]


def state_array(st: dict, key: str, shape: tuple, positive: bool = False) -> np.ndarray:
    """``st[key]`` as a finite float64 array of ``shape`` (an int per axis, or None for any
    length). One-line ValueError naming the entry otherwise: a saved state is checked
    before it is used."""
    if key not in st:
        raise ValueError(f"has no state {key!r}")
    a = np.asarray(st[key])
    if a.dtype.kind not in "fiu" or a.ndim != len(shape) or any(
            isinstance(want, int) and got != want for got, want in zip(a.shape, shape)):
        raise ValueError(f"state {key!r} has shape {a.shape} ({a.dtype}), expected {shape}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"state {key!r} holds NaN or infinite values")
    if positive and not (a > 0).all():
        raise ValueError(f"state {key!r} must be positive")
    return a


def _same(key_a, a_len, key_b, b_len):
    if a_len != b_len:
        raise ValueError(f"states {key_a!r} and {key_b!r} disagree in size ({a_len} vs {b_len})")


def _positive_definite(key, cov):
    try:
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError(f"state {key!r} is not a positive definite covariance") from None
    if not np.allclose(cov, np.swapaxes(cov, -1, -2), rtol=1e-10, atol=1e-12):
        raise ValueError(f"state {key!r} is not symmetric")


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
        # a row-wise sum, not a matrix product: BLAS picks kernels by the number of rows,
        # and an image's score must not depend on the rows scored beside it
        return -(post * np.arange(post.shape[1], dtype=np.float64)).sum(axis=1)


class Typicality:
    """Minus the distance of ``log p(x)`` from its in-distribution training mean
    (the typicality test with batch size 1)."""

    def fit(self, rep):
        self.mean_ = float(np.mean(rep.loglik))
        return self

    def get_state(self):
        return {"mean": np.float64(self.mean_)}

    def set_state(self, st):
        self.mean_ = float(state_array(st, "mean", ()))
        return self

    def score(self, rep):
        return -np.abs(rep.loglik - self.mean_)

    def train_score(self, rep):
        """Leave-one-out: each training image against the mean of the others."""
        ll = np.asarray(rep.loglik, dtype=np.float64)
        n = len(ll)
        if n < 2:
            return self.score(rep)
        return -np.abs(ll - (ll.sum() - ll) / (n - 1))


class Complexity:
    """``log2 p(x) + L(x)``, bits: the likelihood ratio against a generic lossless
    compressor (PNG), after Serra et al. (2020). Simple inputs that every model finds
    likely are no longer favoured."""

    def fit(self, rep):
        return self

    def score(self, rep):
        return rep.loglik / math.log(2) + rep.png_bits


def _canonical(z: np.ndarray) -> np.ndarray:
    """A row order that depends on the rows alone (lexicographic), for fits that would
    otherwise depend on the order the images came in."""
    return np.lexsort(z.T[::-1])


def profile_levels(schedule_T: int, alpha_bar: np.ndarray, n_levels: int) -> np.ndarray:
    """``n_levels`` levels spread evenly in noise standard deviation ``sqrt(1 - abar)``
    from clean (t = 0) to the noisiest level T: even steps in what the classifier sees,
    whatever the schedule."""
    sigma = np.sqrt(np.clip(1.0 - alpha_bar[: schedule_T + 1], 0, None))
    targets = np.linspace(0.0, sigma[-1], n_levels)
    idx = np.unique(np.abs(sigma[None, :] - targets[:, None]).argmin(axis=1))
    return idx


# The largest kNN bank kept by default: fitting costs (training images) x (bank rows)
# distance computations, so above it the cost grows linearly in n instead of as n^2.
# benchmarks/results/knn_bank/ measures what a smaller bank changes.
MAX_BANK = 100_000


class SklearnSearch:
    """``search(q, k)``: (len(q), k) indices of the k nearest bank rows, by scikit-learn
    (an object, not a closure, so that a fitted detector pickles)."""

    def __init__(self, bank: np.ndarray, n_neighbors: int):
        self.nn = NearestNeighbors(n_neighbors=n_neighbors).fit(bank)

    def __call__(self, q: np.ndarray, k: int) -> np.ndarray:
        return self.nn.kneighbors(q, n_neighbors=k)[1]


class KNNBank:
    """The distance from a row to its ``k``-th nearest ID training row, over a bank of at
    most ``max_bank`` training rows (None: all). A larger training set is subsampled for
    the bank, seeded and in canonical row order, so the same set gives the same bank in
    any order; every training row still gets an out-of-sample distance (the bank's own
    rows leave themselves out, the others are fresh to it).

    ``search_device``: where the neighbours are searched, exactly, in blocks of torch
    matrix products (a GPU: the one the representation came from); None: scikit-learn's
    search on the CPU, which is faster there (benchmarks/README.md, *How fitting grows*).
    Either way the distances are then recomputed in float64 row by row."""

    def __init__(self, k: int, max_bank: int | None = MAX_BANK, seed: int = 0, search_device=None):
        if max_bank is not None and max_bank <= k:
            raise ValueError(f"max_bank={max_bank} must exceed n_neighbors={k}")
        self.k, self.max_bank, self.seed, self.search_device = k, max_bank, seed, search_device

    def fit(self, z: np.ndarray, what: str):
        if len(z) <= self.k:
            raise ValueError(f"{what} needs more than {self.k} training images, got {len(z)}")
        self.n_fit_ = len(z)
        self.in_bank_ = np.ones(len(z), dtype=bool)
        if self.max_bank is not None and len(z) > self.max_bank:
            chosen = _canonical(z)[np.random.default_rng(self.seed).permutation(len(z))[: self.max_bank]]
            self.in_bank_ = np.zeros(len(z), dtype=bool)
            self.in_bank_[chosen] = True
        return self.set_bank(z[self.in_bank_])

    def set_bank(self, bank: np.ndarray):
        self.bank_ = bank
        if self.search_device is None:
            self.search_ = SklearnSearch(bank, self.k + 1)
        else:
            self.search_ = TorchSearch(bank, self.search_device)
        return self

    def distance(self, z: np.ndarray) -> np.ndarray:
        """(N,) distance of each row of ``z`` to its k-th nearest bank row."""
        return kth_distance(self.search_, self.bank_, z, self.k)

    def train_distance(self, z: np.ndarray) -> np.ndarray:
        """Out-of-sample distances of the rows ``fit`` saw, in their order."""
        if getattr(self, "n_fit_", None) != len(z):
            raise ValueError("out-of-sample training scores need the images the kNN bank was fitted on")
        out = np.empty(len(z))
        out[self.in_bank_] = kth_distance(self.search_, self.bank_, z[self.in_bank_], self.k + 1)
        if not self.in_bank_.all():
            out[~self.in_bank_] = self.distance(z[~self.in_bank_])
        return out


class Profile:
    """The multiscale likelihood profile ``log p_t(x) / d`` over a subsample of levels,
    standardised, under a density model fitted on ID training profiles:

    * ``density="knn"``: kNN log-density up to a constant, ``-D log r_k`` (r_k the
      distance to the k-th nearest training profile, D the number of levels; a bank of
      at most ``max_bank`` training profiles, see :class:`KNNBank`);
    * ``density="gmm"``: a full-covariance Gaussian mixture's log-density.
    """

    def __init__(self, levels: np.ndarray, density="knn", n_neighbors=5, n_components=10, seed=0,
                 max_bank=MAX_BANK, search_device=None):
        if density not in ("knn", "gmm"):
            raise ValueError(f"density must be 'knn' or 'gmm', got {density!r}")
        self.levels, self.density = np.asarray(levels), density
        self.n_neighbors, self.n_components, self.seed = n_neighbors, n_components, seed
        self.bank = KNNBank(n_neighbors, max_bank, seed, search_device)

    def features(self, rep):
        return rep.levels(self.levels) / rep.dim

    def fit(self, rep):
        z = self.features(rep)
        self.scaler_ = StandardScaler().fit(z)
        z = self.scaler_.transform(z)
        if self.density == "knn":
            self.bank.fit(z, "profile/knn")
        else:
            k = min(self.n_components, len(z))
            if k < self.n_components:
                warnings.warn(f"n_components={self.n_components} is more than the {len(z)} fitting images: the "
                              f"mixture has {k} components", stacklevel=4)
            # in a canonical row order: k-means starts the mixture from the data, not from their order
            self.gmm_ = GaussianMixture(k, covariance_type="full", reg_covar=1e-3,
                                        random_state=self.seed).fit(z[_canonical(z)])
        return self

    def get_state(self):
        st = {"scaler_mean": self.scaler_.mean_, "scaler_scale": self.scaler_.scale_}
        if self.density == "knn":
            st["train_z"] = self.bank.bank_
        else:
            st.update(weights=self.gmm_.weights_, means=self.gmm_.means_, covariances=self.gmm_.covariances_)
        return st

    def set_state(self, st):
        n_lev = len(self.levels)
        mean, scale = state_array(st, "scaler_mean", (n_lev,)), state_array(st, "scaler_scale", (n_lev,), True)
        if self.density == "knn":
            z = state_array(st, "train_z", (None, n_lev))
            if len(z) <= self.n_neighbors:
                raise ValueError(f"state 'train_z' has {len(z)} rows; n_neighbors={self.n_neighbors} needs more")
        else:
            w, mu = state_array(st, "weights", (None,), True), state_array(st, "means", (None, n_lev))
            cov = state_array(st, "covariances", (None, n_lev, n_lev))
            _same("weights", len(w), "means", len(mu))
            _same("weights", len(w), "covariances", len(cov))
            if abs(w.sum() - 1) > 1e-6:
                raise ValueError("state 'weights' does not sum to 1")
            _positive_definite("covariances", cov)
        self.scaler_ = StandardScaler()
        self.scaler_.mean_, self.scaler_.scale_ = mean, scale
        self.scaler_.var_ = self.scaler_.scale_ ** 2
        self.scaler_.n_features_in_ = len(self.scaler_.mean_)
        if self.density == "knn":
            self.bank.set_bank(z)
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
        r = np.maximum(self.bank.train_distance(z) if _is_train else self.bank.distance(z), 1e-12)
        return -z.shape[1] * np.log(r)

    def train_score(self, rep):
        """Out-of-sample scores of the training profiles: for kNN, leave-one-out for the
        bank's rows (a point is not its own neighbour) and the plain score for the rest;
        for the mixture, 10-fold cross-fitting (scaler and
        mixture refitted without each fold, then scored on it), since in-sample mixture
        densities are optimistic (at n = 500 in 20 dimensions a threshold set on them
        accepted half of fresh ID images). Mixtures fitted on 90 % of the images are a
        little worse than the full one, so the cross-fitted scores err low: thresholds on
        them accept slightly more than asked (0.967 for 0.95 in tests/test_conformal.py)."""
        if self.density == "knn":
            return self.score(rep, _is_train=True)
        z = self.features(rep)
        n, folds = len(z), min(10, len(z))
        out = np.empty(n)
        fold_of = np.empty(n, dtype=int)  # folds by canonical row order: the same for any input order
        fold_of[_canonical(z)] = np.random.default_rng(self.seed).permutation(n) % folds
        for f in range(folds):
            held, kept = fold_of == f, fold_of != f
            if kept.sum() < 2:
                return self.score(rep)
            scaler = StandardScaler().fit(z[kept])
            zk = scaler.transform(z[kept])
            gmm = GaussianMixture(min(self.n_components, int(kept.sum())), covariance_type="full", reg_covar=1e-3,
                                  random_state=self.seed).fit(zk[_canonical(zk)])
            # scored in the full model's standardised units, so that the densities compare
            # with those of score() (the two scalers' log-Jacobians differ by a constant)
            shift = np.log(self.scaler_.scale_).sum() - np.log(scaler.scale_).sum()
            out[held] = gmm.score_samples(scaler.transform(z[held])) + shift
        return out


def _need_features(rep):
    if rep.features is None:
        raise ValueError("this model's network does not return pooled features; feature scores need oodkit's UNet")
    return rep.features.double().numpy()


def _l2(z):
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


class FeatureKNN:
    """Deep nearest neighbours (Sun et al., 2022) on the pooled decoder output the noise
    classifier's head reads, from the same forward pass: minus the distance of the
    L2-normalised feature to its k-th nearest ID training feature (over a bank of at
    most ``max_bank`` of them, see :class:`KNNBank`)."""

    def __init__(self, n_neighbors=5, max_bank=MAX_BANK, seed=0, search_device=None):
        self.n_neighbors = n_neighbors
        self.bank = KNNBank(n_neighbors, max_bank, seed, search_device)

    def fit(self, rep):
        self.bank.fit(_l2(_need_features(rep)), "features/knn")
        return self

    def get_state(self):
        return {"train_z": self.bank.bank_}

    def set_state(self, st):
        z = state_array(st, "train_z", (None, None))
        if len(z) <= self.n_neighbors:
            raise ValueError(f"state 'train_z' has {len(z)} rows; n_neighbors={self.n_neighbors} needs more")
        self.bank.set_bank(z)
        return self

    def feature_dim(self):
        return self.bank.bank_.shape[1]

    def score(self, rep):
        return -self.bank.distance(_l2(_need_features(rep)))

    def train_score(self, rep):
        """Out-of-sample distances of the training features (see :class:`KNNBank`)."""
        return -self.bank.train_distance(_l2(_need_features(rep)))


class TorchSearch:
    """Exact nearest-neighbour search over ``bank`` (M, D) on a torch ``device``, in
    blocks of queries: float32 squared distances by one matrix product per block, and the
    ``k + margin`` smallest kept, so that float32 rounding (about 1e-7 of the squared norms)
    cannot push a true neighbour out before :func:`kth_distance` recomputes the distances in
    float64. Called as ``search(queries, k) -> (N, >= k) candidate indices``."""

    def __init__(self, bank: np.ndarray, device, block: int = 1024, margin: int = 16):
        import torch

        self.device, self.block, self.margin = torch.device(device), block, margin
        self.bank = torch.as_tensor(bank, dtype=torch.float32, device=self.device)
        self.sq = (self.bank * self.bank).sum(1)

    def __call__(self, q: np.ndarray, k: int) -> np.ndarray:
        import torch

        m = min(len(self.bank), k + self.margin)
        out = []
        for a in range(0, len(q), self.block):
            qt = torch.as_tensor(q[a : a + self.block], dtype=torch.float32, device=self.device)
            d2 = self.sq[None, :] - 2.0 * (qt @ self.bank.T)  # + |q|^2, the same for every bank row
            out.append(torch.topk(d2, m, dim=1, largest=False).indices.cpu())
        return torch.cat(out).numpy()


def kth_distance(search, bank: np.ndarray, z: np.ndarray, k: int, block: int = 4096) -> np.ndarray:
    """Euclidean distance (N,) from each row of ``z`` to its ``k``-th nearest row of
    ``bank``; ``search(queries, k)`` gives each query's k (or more) nearest candidate
    indices. Their distances are then computed row by row in float64, so that a row's
    score does not depend on which other rows were searched with it (a search's matrix
    products round by block size)."""
    out = np.empty(len(z))
    for a in range(0, len(z), block):
        q = z[a : a + block]
        idx = search(q, k)
        d = np.sqrt(np.square(q[:, None, :] - bank[idx]).sum(-1))
        out[a : a + block] = np.sort(d, axis=1)[:, k - 1]
    return out


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

        loc = state_array(st, "location", (None,))
        cov = state_array(st, "covariance", (len(loc), len(loc)))
        _positive_definite("covariance", cov)
        self.cov_ = EmpiricalCovariance()
        self.cov_._set_covariance(cov)
        self.cov_.location_ = loc
        return self

    def feature_dim(self):
        return len(self.cov_.location_)

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


class _HeadScore:
    """A score read from logits a head computed in the same forward pass (``rep.<logits>``),
    refused in one line when the model has no such head."""

    logits, missing = "", ""

    def fit(self, rep):
        return self

    def _logits(self, rep):
        value = getattr(rep, self.logits)
        if value is None:
            raise ValueError(self.missing)
        return value


class _ClassHead(_HeadScore):
    """A labelled CDM's class-head score, from the same forward pass."""

    score_name = ""
    logits = "class_logits"
    missing = "this CDM has no class head: msp and energy need one trained on labels (oodkit train --class-head)"

    def score(self, rep):
        return class_score(self._logits(rep), self.score_name).numpy()


class MaxSoftmax(_ClassHead):
    score_name = "msp"


class Energy(_ClassHead):
    score_name = "energy"


class Upright(_HeadScore):
    """``log p(rotation = 0 | x)`` under a CDM's label-free rotation head, read from the
    one pass on the upright image (nats; higher = the network recognises how the image
    should stand, as it does for images like its training data; after Hendrycks et al.,
    2019, who sum the loss over all four turns at four passes)."""

    logits = "rotation_logits"
    missing = "this CDM has no rotation head: the upright score needs one (oodkit train --rotation-head)"

    def score(self, rep):
        import torch

        return torch.log_softmax(self._logits(rep).double(), dim=1)[:, 0].numpy()


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
                             f"{', '.join(self.components)} (features: Mahalanobis, features-knn: kNN, upright: the "
                             "rotation head): refit it with `oodkit fit`")
        self.ref_ = {}
        for name, c in self.components.items():
            sub = {k[len(name) + 1:]: v for k, v in st.items() if k.startswith(name + ".")}
            if hasattr(c, "set_state"):
                try:
                    c.set_state(sub)
                except ValueError as e:
                    raise ValueError(f"component {name}: {e}") from None
            ref = state_array(sub, "ref", (None,))
            if len(ref) == 0 or (np.diff(ref) < 0).any():
                raise ValueError(f"component {name}: state 'ref' must be sorted training scores")
            self.ref_[name] = (ref, float(state_array(sub, "scale", (), True)))
        return self

    def feature_dim(self):
        return next((c.feature_dim() for c in self.components.values() if hasattr(c, "feature_dim")), None)

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
    "upright": Upright,
}
