"""Transferability scores: how well a pretrained candidate will fine-tune on a target, from its frozen
features (and its source classifier's predictions) of the target's training split, in seconds.

Each function takes plain arrays (features float (N, D), labels int (N,), source-class
probabilities (N, Z)) and returns one number, higher is better. docs/scores.md says what each
means, its reference, and when not to trust it.

- ``logme``: LogME (You et al., ICML 2021), the evidence of a Bayesian linear regression of each
  class's one-hot target on the features, per image, averaged over classes; its two precisions
  (alpha of the weights' prior, beta of the noise) maximise the evidence by the paper's fixed point.
- ``h_score``: H-score (Bao et al., ICIP 2019), tr(cov(f)^+ cov(E[f | y])).
- ``knn_accuracy``: leave-one-out k-nearest-neighbour accuracy (Renggli et al., CVPR 2022).
- ``nce``: negative conditional entropy -H(Y | Z) of the target label given the source classifier's
  label (Tran et al., ICCV 2019).
- ``leep``: log expected empirical prediction (Nguyen et al., ICML 2020).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LOGME_ITERATIONS = 200
LOGME_TOLERANCE = 1e-7  # relative change of alpha / beta at which the fixed point stops
KNN_NEIGHBOURS = 5


def _one_hot(labels: np.ndarray) -> np.ndarray:
    classes = np.unique(labels)
    return (labels[:, None] == classes[None, :]).astype(np.float64)


@dataclass(frozen=True)
class Spectrum:
    """The thin SVD of the features F (N, D) = U diag(s) V^T that every LogME step needs: ``sigma``
    (s^2, the nonzero eigenvalues of F^T F), ``basis`` (U, N x k), and D."""

    sigma: np.ndarray
    basis: np.ndarray
    dims: int

    @classmethod
    def of(cls, features: np.ndarray) -> Spectrum:
        f = np.asarray(features, np.float64)
        basis, singular, _ = np.linalg.svd(f, full_matrices=False)
        return cls(singular ** 2, basis, f.shape[1])


def linear_evidence(features: np.ndarray | Spectrum, target: np.ndarray, alpha: float, beta: float) -> float:
    """log p(target | features, alpha, beta) / N of the model target = features @ w + noise, with
    w ~ N(0, I / alpha) and noise ~ N(0, I / beta): the quantity LogME maximises. In the SVD's
    coordinates z = U^T y, the posterior mean m = beta A^-1 F^T y (A = alpha I + beta F^T F) has
    |m|^2 = sum((s z beta / (alpha + beta sigma))^2) and the residual |y - F m|^2 =
    |y|^2 - |z|^2 + sum((z alpha / (alpha + beta sigma))^2)."""
    spectrum = features if isinstance(features, Spectrum) else Spectrum.of(features)
    target = np.asarray(target, np.float64)
    weights, residual, log_det = _posterior(spectrum, spectrum.basis.T @ target, float(target @ target), alpha, beta)
    n, d = len(target), spectrum.dims
    evidence = (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - 0.5 * log_det - beta / 2 * residual
                - alpha / 2 * weights - n / 2 * math.log(2 * math.pi))
    return evidence / n


def _posterior(spectrum: Spectrum, z: np.ndarray, target_norm: float, alpha: float,
               beta: float) -> tuple[float, float, float]:
    """(|m|^2, |y - F m|^2, log det A) at ``alpha``, ``beta``; ``z`` = U^T y, ``target_norm`` = |y|^2."""
    sigma = spectrum.sigma
    denominator = alpha + beta * sigma
    weights = float((sigma * (z * beta / denominator) ** 2).sum())
    residual = float(target_norm - z @ z + ((z * alpha / denominator) ** 2).sum())
    log_det = float(np.log(denominator).sum()) + (spectrum.dims - len(sigma)) * math.log(alpha)
    return weights, max(residual, 0.0), log_det


def logme_precisions(features: np.ndarray | Spectrum, target: np.ndarray) -> tuple[float, float]:
    """(alpha, beta) maximising ``linear_evidence`` for one target column: MacKay's fixed point, as
    in You et al.'s Algorithm 1 (gamma, the effective number of parameters, then alpha = gamma /
    |m|^2 and beta = (N - gamma) / |Fm - y|^2, until they settle)."""
    spectrum = features if isinstance(features, Spectrum) else Spectrum.of(features)
    target = np.asarray(target, np.float64)
    n, z, target_norm = len(target), spectrum.basis.T @ target, float(target @ target)
    alpha, beta = 1.0, 1.0
    for _ in range(LOGME_ITERATIONS):
        gamma = float((beta * spectrum.sigma / (alpha + beta * spectrum.sigma)).sum())
        weights, residual, _ = _posterior(spectrum, z, target_norm, alpha, beta)
        new_alpha = gamma / max(weights, 1e-300)
        new_beta = (n - gamma) / max(residual, 1e-300)
        settled = abs(new_alpha - alpha) <= LOGME_TOLERANCE * alpha and abs(new_beta - beta) <= LOGME_TOLERANCE * beta
        alpha, beta = new_alpha, new_beta
        if settled:
            break
    return alpha, beta


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME: the maximised evidence per image of each class's one-hot target, averaged over classes
    (one SVD of the features serves every class)."""
    spectrum = Spectrum.of(features)
    targets = _one_hot(np.asarray(labels))
    return float(np.mean([linear_evidence(spectrum, targets[:, k], *logme_precisions(spectrum, targets[:, k]))
                          for k in range(targets.shape[1])]))


def h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score: tr(cov(f)^+ cov(E[f | y])), the between-class covariance seen through the features'
    own (pseudo-inverted) covariance; larger when the classes' means lie far apart in few-variance
    directions."""
    f = np.asarray(features, np.float64)
    f = f - f.mean(axis=0)
    labels = np.asarray(labels)
    covariance = f.T @ f / len(f)
    class_means = np.zeros_like(f)
    for label in np.unique(labels):
        chosen = labels == label
        class_means[chosen] = f[chosen].mean(axis=0)
    between = class_means.T @ class_means / len(f)
    return float(np.trace(np.linalg.pinv(covariance, rcond=1e-10, hermitian=True) @ between))


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = KNN_NEIGHBOURS, chunk: int = 1024) -> float:
    """Leave-one-out accuracy of k nearest neighbours (Euclidean) on the features: each image's
    label voted by its k nearest others (ties to the nearest neighbour among the tied classes)."""
    f = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    n = len(f)
    k = min(k, n - 1)
    squared = (f ** 2).sum(axis=1)
    correct = 0
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        distances = squared[rows, None] + squared[None, :] - 2 * f[rows] @ f.T
        distances[np.arange(rows.stop - rows.start), np.arange(rows.start, rows.stop)] = np.inf  # leave self out
        nearest = np.argsort(distances, axis=1, kind="stable")[:, :k]
        for row, neighbours in enumerate(nearest):
            votes = labels[neighbours]
            values, counts = np.unique(votes, return_counts=True)
            tied = set(values[counts == counts.max()])
            predicted = next(label for label in votes if label in tied)  # the nearest of the tied classes
            correct += int(predicted == labels[rows.start + row])
    return correct / n


def _joint(source_probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The empirical joint P(y, z) (target classes x source classes) of soft source predictions."""
    targets = _one_hot(np.asarray(labels))
    return targets.T @ np.asarray(source_probabilities, np.float64) / len(targets)


def nce(source_probabilities: np.ndarray, labels: np.ndarray) -> float:
    """NCE: -H(Y | Z), Z the source classifier's predicted (argmax) class: 0 when the source label
    determines the target label, -log(classes) at worst."""
    probabilities = np.asarray(source_probabilities, np.float64)
    hard = np.zeros_like(probabilities)
    hard[np.arange(len(hard)), probabilities.argmax(axis=1)] = 1.0
    joint = _joint(hard, labels)
    marginal = joint.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(joint / marginal), 0.0)
    return float(terms.sum())


def leep(source_probabilities: np.ndarray, labels: np.ndarray) -> float:
    """LEEP: the mean log-likelihood of each image's label under the 'expected empirical predictor'
    sum_z P(y | z) theta_z(x), theta the source classifier's probabilities."""
    probabilities = np.asarray(source_probabilities, np.float64)
    joint = _joint(probabilities, labels)
    conditional = joint / np.clip(joint.sum(axis=0, keepdims=True), 1e-300, None)  # P(y | z)
    predicted = probabilities @ conditional.T  # (N, target classes)
    index = np.searchsorted(np.unique(labels), np.asarray(labels))
    return float(np.log(np.clip(predicted[np.arange(len(index)), index], 1e-300, None)).mean())
