"""The transferability scores (transferlab.scores): LogME against an independent computation of its
evidence, and every score ordering features of known separability."""

import math

import numpy as np
import pytest

from transferlab import scores


def _separable(scale: float, n_per_class: int = 40, classes: int = 4, dims: int = 8, seed: int = 0):
    """Features whose class means lie ``scale`` apart (noise of unit variance), and their labels."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, dims))
    labels = np.repeat(np.arange(classes), n_per_class)
    features = rng.normal(size=(len(labels), dims)) + scale * means[labels]
    return features, labels, means


def _grid_evidence(features, target, log_alphas, log_betas):
    """log N(target; 0, I / beta + F F^T / alpha) / N on a grid, through the eigenvalues of F F^T:
    the marginal likelihood written directly, without LogME's posterior mean or its fixed point."""
    n = len(target)
    eigenvalues, vectors = np.linalg.eigh(features @ features.T)
    eigenvalues = np.clip(eigenvalues, 0, None)
    projected = (vectors.T @ target) ** 2
    alphas, betas = np.exp(log_alphas)[:, None, None], np.exp(log_betas)[None, :, None]
    variances = 1 / betas + eigenvalues[None, None, :] / alphas
    log_density = -0.5 * (np.log(variances).sum(-1) + (projected / variances).sum(-1) + n * math.log(2 * math.pi))
    return log_density / n


def test_logme_is_the_evidence_maximised_over_its_two_precisions():
    features, labels, _ = _separable(1.0, n_per_class=15, classes=3, dims=5)
    target = (labels == 1).astype(float)
    alpha, beta = scores.logme_precisions(features, target)
    value = scores.linear_evidence(features, target, alpha, beta)
    # the same evidence written as a Gaussian density, at the fixed point's precisions
    assert _grid_evidence(features, target, np.log([alpha]), np.log([beta]))[0, 0] == pytest.approx(value, abs=1e-9)
    # and maximised by a plain grid over both precisions, then a finer grid around its best cell
    coarse = np.linspace(-12, 12, 241)
    grid = _grid_evidence(features, target, coarse, coarse)
    i, j = np.unravel_index(grid.argmax(), grid.shape)
    fine_a, fine_b = np.linspace(coarse[i] - 0.1, coarse[i] + 0.1, 201), np.linspace(coarse[j] - 0.1, coarse[j] + 0.1, 201)
    fine = _grid_evidence(features, target, fine_a, fine_b)
    assert value >= fine.max() - 1e-9
    assert value - fine.max() < 1e-5
    k, m = np.unravel_index(fine.argmax(), fine.shape)
    assert math.log(alpha) == pytest.approx(fine_a[k], abs=2e-3)
    assert math.log(beta) == pytest.approx(fine_b[m], abs=2e-3)


def test_logme_averages_the_classes_evidence():
    features, labels, _ = _separable(1.0, n_per_class=10, classes=3, dims=4)
    per_class = [scores.linear_evidence(features, (labels == k).astype(float),
                                        *scores.logme_precisions(features, (labels == k).astype(float)))
                 for k in range(3)]
    assert scores.logme(features, labels) == pytest.approx(np.mean(per_class))


SCALES = (0.0, 0.3, 0.8, 2.0)


@pytest.mark.parametrize("score", ["logme", "h_score", "knn_accuracy"])
def test_feature_scores_rank_features_in_their_order_of_separability(score):
    values = []
    for scale in SCALES:
        features, labels, _ = _separable(scale)
        values.append(getattr(scores, score)(features, labels))
    assert values == sorted(values) and len(set(values)) == len(values), values


@pytest.mark.parametrize("score", ["nce", "leep"])
def test_source_prediction_scores_rank_source_classifiers_in_their_order_of_separability(score):
    values = []
    for scale in SCALES:
        features, labels, means = _separable(scale)
        logits = features @ means.T * 2  # a source classifier over 4 source classes
        probabilities = np.exp(logits - logits.max(1, keepdims=True))
        probabilities /= probabilities.sum(1, keepdims=True)
        values.append(getattr(scores, score)(probabilities, labels))
    assert values == sorted(values) and len(set(values)) == len(values), values


def test_nce_and_leep_reach_their_bounds():
    labels = np.array([0, 0, 1, 1, 2, 2])
    determined = np.eye(3)[labels]  # the source label says the target label
    assert scores.nce(determined, labels) == pytest.approx(0.0)
    assert scores.leep(determined, labels) == pytest.approx(0.0)
    uninformative = np.full((6, 3), 1 / 3)
    assert scores.leep(uninformative, labels) == pytest.approx(-math.log(3))


def test_knn_accuracy_leaves_each_image_out():
    features = np.array([[0.0], [0.0], [10.0], [10.0]])
    labels = np.array([0, 1, 1, 1])
    # with k=1 an image's own copy is its neighbour; itself never is
    assert scores.knn_accuracy(features, labels, k=1) == pytest.approx(0.5)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_weights_files_own_head_is_its_source_classifier_and_a_folder_gives_none(tmp_path, suffix):
    """NCE and LEEP read the candidate's own head: a weights file's (either format), never the library's
    ImageNet head in its place (a timm local-dir: folder has no file to read it from: none, offline)."""
    import torch
    import torchvision
    from safetensors.torch import save_file

    from transferlab.candidates import source_head
    from transferlab.composition import compose_config

    state = torchvision.models.resnet18(weights=None, num_classes=7).state_dict()
    path = tmp_path / f"weights{suffix}"
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    config = compose_config(["data=synthetic", "model=resnet18", f"model.weights={path}"])
    weight, bias = source_head(config, model, "fc")
    assert torch.equal(weight, state["fc.weight"]) and torch.equal(bias, state["fc.bias"])
    folder = compose_config(["data=synthetic", "model.name=resnet18", f"model.weights={tmp_path}"])
    assert source_head(folder, model, "fc") is None
