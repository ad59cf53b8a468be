"""The Fréchet distance of two Gaussians fitted to features, by the FVD reference's formula
(google-research `frechet_video_distance.py` calls TF-GAN's
`frechet_classifier_distance_from_activations`): float64; mean; covariance with n - 1;
|m1 - m2|^2 + Tr(S1) + Tr(S2) - 2 Tr(sqrt(A S2 A)), A = sqrt(S1). Both square roots are of
symmetric positive semi-definite matrices, so no complex root arises (scipy's `sqrtm(S1 @ S2)`,
as pytorch-fid and cd-fvd take it, roots a non-symmetric product and drops an imaginary part).

One departure, for sets of fewer videos than features (rank-deficient covariances): TF-GAN
roots singular values above an absolute 1e-10, which lets float64 rounding noise of the zero
eigenvalues (~1e-9 here) through the square root: FVD(A, A) of three real videos came out
-9.0e-5. Here eigenvalues below max * D * eps (float64 rounding of the largest) count as
zero: the same FVD to ~1e-15 relative on full-rank sets, and 0 (4e-12) for FVD(A, A).
The reference casts its float64 result to float32; this module returns the float64 value.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Stats:
    """A feature set as FVD needs it: mean (D,), covariance (D, D) with n - 1, count."""
    mean: np.ndarray
    cov: np.ndarray
    count: int

    @classmethod
    def of(cls, features) -> "Stats":
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"need at least 2 feature vectors (N, D), got shape {x.shape}")
        mean = x.mean(axis=0)
        centred = x - mean
        return cls(mean, centred.T @ centred / (len(x) - 1), len(x))


def _psd_eigen(mat: np.ndarray) -> tuple:
    """(eigenvalues, eigenvectors) of a symmetric PSD matrix, rounding noise set to 0."""
    lam, vec = np.linalg.eigh(mat)
    tol = np.abs(lam).max(initial=0.0) * len(lam) * np.finfo(np.float64).eps
    return np.where(lam > tol, lam, 0.0), vec


def trace_sqrt_product(sigma: np.ndarray, sigma_v: np.ndarray) -> float:
    """Tr(sqrt(sigma @ sigma_v)) through sqrt(A sigma_v A), A = sqrt(sigma): TF-GAN's route."""
    lam, vec = _psd_eigen(sigma)
    a = (vec * np.sqrt(lam)) @ vec.T
    return float(np.sqrt(_psd_eigen(a @ (sigma_v @ a))[0]).sum())


def frechet_distance(real: Stats, generated: Stats) -> float:
    """FVD from two feature statistics (the reference's argument order: real, then generated)."""
    if real.mean.shape != generated.mean.shape:
        raise ValueError(f"feature sizes differ: {real.mean.shape[0]} and {generated.mean.shape[0]}")
    trace = np.trace(real.cov + generated.cov) - 2.0 * trace_sqrt_product(real.cov, generated.cov)
    return float(trace + np.sum(np.square(real.mean - generated.mean)))


def fvd(real_features, generated_features) -> float:
    """FVD of two (N, D) feature arrays (time-averaged I3D logits, D = 400)."""
    return frechet_distance(Stats.of(real_features), Stats.of(generated_features))


def kvd(real_features, generated_features, max_block_size: int = 1024) -> tuple:
    """(KVD, its standard error): the kernel distance of the FVD paper, TF-GAN's
    `kernel_classifier_distance_and_std_from_activations` in float64: the unbiased MMD^2 with
    the kernel (x.y / D + 1)^3, averaged over blocks of at most `max_block_size` (the sets
    split into the same number of near-equal blocks, the larger ones last); the error is
    NaN for one block."""
    r = np.asarray(real_features, np.float64)
    g = np.asarray(generated_features, np.float64)
    if r.ndim != 2 or g.ndim != 2 or r.shape[1] != g.shape[1]:
        raise ValueError(f"feature arrays (N, D) of one D, got {r.shape} and {g.shape}")
    blocks = -(-max(len(r), len(g)) // max_block_size)
    if min(len(r), len(g)) < 2 * blocks:
        raise ValueError("KVD needs at least 2 feature vectors per block and set")

    def bounds(n):
        size, plus = n // blocks, n % blocks
        sizes = [size] * (blocks - plus) + [size + 1] * plus
        return np.concatenate([[0], np.cumsum(sizes)])

    def k(a, b):
        return (a @ b.T / r.shape[1] + 1.0) ** 3

    def unbiased(kk, m):
        return (kk.sum() - np.trace(kk)) / (m * (m - 1))

    br, bg = bounds(len(r)), bounds(len(g))
    ests = []
    for i in range(blocks):
        x, y = r[br[i]:br[i + 1]], g[bg[i]:bg[i + 1]]
        ests.append(-2 * k(x, y).mean() + unbiased(k(x, x), len(x)) + unbiased(k(y, y), len(y)))
    ests = np.asarray(ests)
    mean = float(ests.mean())
    var = float(np.sum((ests - mean) ** 2) / (blocks - 1)) if blocks > 1 else float("nan")
    return mean, float(np.sqrt(var / blocks))
