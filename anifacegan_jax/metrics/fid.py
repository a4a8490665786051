"""FID and KID of Inception features, pure numpy float64.

FID (Heusel et al. 2017) is the Fréchet distance of Gaussians fitted to two feature sets,
‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½), computed exactly as pytorch-fid does (scipy's sqrtm,
unbiased covariances) so numbers compare with the literature. KID (Bińkowski et al. 2018) is the
unbiased MMD² with the kernel k(x, y) = (x·y / d + 1)³, averaged over random subsets as in
clean-fid and torch-fidelity. Features come from `inception.features`; statistics accumulate
batch by batch in `FeatureStats` and save to .npz (whose `mu`/`sigma` pytorch-fid also reads).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import scipy.linalg


def _check_features(features: np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
  """(N, D) finite float64 copy, or a ValueError naming `name`."""
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
    want = f"(N, {dim})" if dim is not None else "(N, D)"
    raise ValueError(f"{name}: features of shape {x.shape}; expected {want}")
  if not np.isfinite(x).all():
    raise ValueError(f"{name}: {np.size(x) - np.isfinite(x).sum()} non-finite feature values")
  return x


class FeatureStats:
  """Running mean and covariance of (N, D) features in float64.

  Batches merge by the pairwise update of Chan et al. (mean and the sum of centred outer
  products M2), which avoids the cancellation of Σxxᵀ − Nμμᵀ; `cov` is M2 / (N − 1), the
  unbiased estimate pytorch-fid takes with np.cov.

  Attributes:
    dim: feature dimension D.
    count: features added so far.
  """

  def __init__(self, dim: int):
    self.dim, self.count = int(dim), 0
    self._mean = np.zeros(self.dim)
    self._m2 = np.zeros((self.dim, self.dim))

  @classmethod
  def from_features(cls, features: np.ndarray) -> FeatureStats:
    x = _check_features(features, "FeatureStats.from_features")
    return cls(x.shape[1]).add(x)

  def add(self, features: np.ndarray) -> FeatureStats:
    """Adds a (N, D) batch; returns self."""
    x = _check_features(features, "FeatureStats.add", self.dim)
    if not len(x):
      return self
    mean = x.mean(axis=0)
    centred = x - mean
    total = self.count + len(x)
    delta = mean - self._mean
    self._m2 += centred.T @ centred + np.outer(delta, delta) * (self.count * len(x) / total)
    self._mean += delta * (len(x) / total)
    self.count = total
    return self

  @property
  def mean(self) -> np.ndarray:
    """(D,) float64 mean."""
    if self.count < 1:
      raise ValueError("FeatureStats.mean: no features added")
    return self._mean.copy()

  @property
  def cov(self) -> np.ndarray:
    """(D, D) float64 unbiased covariance (ddof=1)."""
    if self.count < 2:
      raise ValueError(f"FeatureStats.cov: {self.count} features; expected at least 2")
    return self._m2 / (self.count - 1)

  def save(self, path: str | os.PathLike[str]) -> None:
    """Writes count, mean, m2 (and pytorch-fid's mu, sigma) to the .npz file `path`."""
    with open(path, "wb") as f:
      np.savez(f, count=np.int64(self.count), mean=self._mean, m2=self._m2, mu=self.mean,
               sigma=self.cov)

  @classmethod
  def load(cls, path: str | os.PathLike[str]) -> FeatureStats:
    """Reads `save`'s file; ValueError naming it if it is not one."""
    expected = "a FeatureStats .npz with count (), mean (D,), m2 (D, D)"
    try:
      with np.load(path, allow_pickle=False) as data:
        count, mean, m2 = (np.asarray(data[key]) for key in ("count", "mean", "m2"))
    except FileNotFoundError:
      raise
    except Exception as e:  # not a zip, not npy records, keys missing, pickled objects
      raise ValueError(f"{path}: cannot read ({e!r}); expected {expected}") from None
    if (count.shape != () or mean.ndim != 1 or m2.shape != (mean.size, mean.size)
        or int(count) < 2 or not (np.isfinite(mean).all() and np.isfinite(m2).all())):
      raise ValueError(f"{path}: count {count.shape} = {count}, mean {mean.shape}, m2 {m2.shape}"
                       f"; expected {expected}, count >= 2 and finite values")
    stats = cls(mean.size)
    stats.count, stats._mean, stats._m2 = int(count), mean.astype(np.float64), m2.astype(np.float64)
    return stats


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
  """‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½), pytorch-fid's `calculate_frechet_distance`.

  Args:
    mu1, mu2: (D,) means.
    sigma1, sigma2: (D, D) covariances.
    eps: added to both diagonals when sqrtm of the product is not finite (singular product).
  Raises:
    ValueError: mismatched shapes, or a square root with a significant imaginary part.
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  d = mu1.shape[0]
  if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f"frechet_distance: mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, "
                     f"sigma2 {sigma2.shape}; expected (D,), (D, D) twice with one D")
  diff = mu1 - mu2
  with warnings.catch_warnings():  # singular products are handled below, as in pytorch-fid
    warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
      offset = np.eye(d) * eps
      covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    imaginary = np.max(np.abs(np.diagonal(covmean).imag))
    if imaginary > 1e-3:
      raise ValueError(f"frechet_distance: sqrtm(Σ₁Σ₂) has imaginary part {imaginary:.3g} on the "
                       "diagonal; expected ≈ 0 (too few features for the dimension?)")
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
  """FID of two accumulated feature sets (each with at least 2 features)."""
  return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
  """FID of two (N, D) / (M, D) feature sets."""
  return fid_from_stats(FeatureStats.from_features(a), FeatureStats.from_features(b))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased MMD² of two (m, d) samples with k(x, y) = (x·y / d + 1)³."""
  m, d = x.shape
  kxx, kyy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3
  kxy = (x @ y.T / d + 1) ** 3
  within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
  return float(within - 2 * kxy.sum() / m**2)


def kid(features_a: np.ndarray, features_b: np.ndarray, num_subsets: int = 100,
        subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
  """KID: the mean and std of the unbiased MMD² over random subsets.

  Args:
    features_a, features_b: (N, D) and (M, D) features.
    num_subsets: subsets drawn (each a pair of subsets, without replacement within a subset).
    subset_size: clipped to min(N, M).
    seed: numpy Generator seed; fixed for reproducible numbers.
  Returns:
    (mean, std) over subsets (std with ddof=0, like torch-fidelity).
  """
  a = _check_features(features_a, "kid: features_a")
  b = _check_features(features_b, "kid: features_b", a.shape[1])
  m = min(subset_size, len(a), len(b))
  if m < 2 or num_subsets < 1:
    raise ValueError(f"kid: subsets of {m} features x {num_subsets}; expected >= 2 and >= 1")
  rng = np.random.default_rng(seed)
  mmds = [_mmd2_unbiased(a[rng.choice(len(a), m, replace=False)],
                         b[rng.choice(len(b), m, replace=False)]) for _ in range(num_subsets)]
  return float(np.mean(mmds)), float(np.std(mmds))
