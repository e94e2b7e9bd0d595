"""Linear probes on cached frozen features: the backbone runs once per image, the head trains alone.

The transfer literature's linear-probe protocol (CLIP's and VTAB's evaluations, Kumar et al.'s LP-FT,
CLIP_benchmark) runs a frozen backbone once over every image, in evaluation mode (BatchNorm with its
running statistics, no dropout) and without augmentation, keeps the features, and fits the head on
them. That is another experiment than a probe in the training loop, where every epoch sends
augmented images through a backbone whose BatchNorm normalises with batch statistics (and updates
its running ones): run.json names which one ran (``PROBE_CACHED`` / ``PROBE_IN_LOOP``).

The features are the input of the model's head (``models.head_name``), taken by a forward
pre-hook, so that the head fitted on them is the model's own head: written back into the model it
makes ``model.pt`` the whole network. A model whose head is not its last step (SqueezeNet pools
after its 1x1 convolution) is refused.

The cache: a folder per split and key (a digest of everything a feature depends on,
``feature_identity``, and the split's name) in ``<data.cache_dir>/features/``, holding a float32
``<split>.npy`` (N, D), the int64 ``<split>_labels.npy`` and ``about.json``, memory-mapped by later
runs. It is a disk cache
of transferlab.diskcache, as the image cache is: built once under a lock and published with one
rename, and rebuilt, with a warning, when it is damaged (a file missing, short, of another shape,
not the labels of the run's split, not finite, or not matching its digest). The weights are in the
key by the SHA-256 of the files loaded (``weights_identity``), never by name or path.

Two ways to fit the head: the run's optimizer over ``FeatureBatches`` (the same batch order as the
image pipeline's, by seed and epoch) through the training loop, or ``fit_logistic_regression``:
full-batch L-BFGS on the multinomial logistic loss with the L2 strength chosen on the validation
split (CLIP's protocol).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferlab.caches import FEATURES_KIND
from transferlab.data.pipelines import batch_sizes, epoch_generator
from transferlab.diskcache import ABOUT_FILE, Arrays, DiskCache, allocate
from transferlab.errors import ConfigError, TransferlabError

log = logging.getLogger(__name__)

PROBE_CACHED = "cached features, BN in evaluation mode, no augmentation"
PROBE_IN_LOOP = "in the training loop"
FEATURES_FORMAT = 3  # bump when what a feature cache stores changes (2: the arrays' SHA-256; 3: a cache per split)
# L-BFGS's L2 sweep, one value a decade first, then a finer one around the best of those. CLIP sweeps
# scikit-learn's C over 1e-6 to 1e6 on a summed loss, which is l2 = 1 / (C * N) on our mean loss:
# 4e-11 to 40 for N = 25,000 images; this range covers that but for the weakest penalties, where a
# fit on features (of order 1, hundreds of them) is unregularised already.
COARSE_L2 = tuple(10.0 ** k for k in range(-8, 3))
FINE_STEPS = 4  # values between the best coarse value's two neighbours, each side
LBFGS_ITERATIONS = 100  # per value of the sweep, each warm-started from the fit of the stronger value before it


# --- what a feature depends on ---------------------------------------------------------------------

def feature_identity(*, model_name: str, init: str, image_size: int, test_view: dict[str, Any],
                     data: dict[str, Any], subset: dict[str, Any], device_type: str, precision: str,
                     versions: dict[str, str]) -> dict[str, Any]:
    """Everything a cached feature depends on, as a JSON-ready dict whose digest names the cache.

    ``init``: ``weights_identity``'s; ``test_view``: the test-time transform (resize, crop,
    normalisation); ``data``: the source (dataset, and what makes its images: an image folder's
    content key, data=synthetic's sizes and seed); ``subset``: the draw of the training subset and
    its validation split. The device type, precision and library versions change features in their
    last bits, so a cache is never shared between them."""
    return {"format": FEATURES_FORMAT, "model": model_name, "init": init, "image_size": image_size,
            "test_view": test_view, "data": data, "subset": subset, "device": device_type,
            "precision": precision, "torch": versions.get("torch"), "torchvision": versions.get("torchvision")}


def weights_identity(init: str, weights_sha256: str | None, init_seed: int) -> str:
    """How the backbone was initialised, as the cache key needs it: the SHA-256 of the weights
    loaded (a file, torchvision's, a timm tag's, a local-dir folder's: models.Init's), never their
    name or path, which may hold other weights tomorrow; or a random initialisation with its seed
    (another seed is another backbone). Weights whose digest is unknown get a key of their own,
    which no later run finds: their features are extracted at every run."""
    if init == "random":
        return f"random, seed {init_seed}"
    if weights_sha256 is not None:
        return f"sha256:{weights_sha256}"
    log.warning("warning: the digest of the weights %s is unknown; their features are extracted again at every run",
                init)
    return f"{init}, unknown digest {uuid.uuid4()}"


def cache_key(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


# --- the model split at its head -------------------------------------------------------------------

def check_head_only(trainable_names: Sequence[str], head: str) -> None:
    """A ConfigError, in one line, unless only the head's parameters train."""
    others = [name for name in trainable_names if not name.startswith(f"{head}.")]
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise ConfigError(f"freeze.cached_features=true needs a run in which only the head ({head}) trains, but "
                          f"{shown} train too; use freeze=last_only or freeze=lp_ft, or freeze.cached_features=false")


@dataclass(frozen=True)
class Features:
    """One split's features (float32 (N, D)) and labels (int64 (N,)), on the host or a device."""

    features: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> Features:
        return Features(self.features.to(device), self.labels.to(device))


@torch.inference_mode()
def extract_features(model: nn.Module, head: str, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     device: torch.device, amp_dtype: torch.dtype | None = None) -> Iterator[tuple[torch.Tensor,
                                                                                                   torch.Tensor]]:
    """(features, labels) of each batch: the input of ``model``'s ``head``, with the model in
    evaluation mode. The first batch checks that the head maps its input to the model's output
    (that the head is the model's last step); a ConfigError otherwise. The model's mode is restored
    at the end."""
    layer = model.get_submodule(head)
    captured: list[torch.Tensor] = []
    hook = layer.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
    training = model.training
    model.eval()
    try:
        for index, (images, labels) in enumerate(batches):
            captured.clear()
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(images)
                if len(captured) != 1:
                    raise ConfigError(f"freeze.cached_features=true: the head {head} ran {len(captured)} times in "
                                      "one forward pass; this model cannot be probed on cached features")
                features = captured[0]
                if index == 0:
                    _check_head_is_last(layer, head, features, logits)
            yield features.float(), labels
    finally:
        hook.remove()
        model.train(training)


def _check_head_is_last(layer: nn.Module, head: str, features: torch.Tensor, logits: torch.Tensor) -> None:
    if features.dim() != 2 or not torch.allclose(layer(features).float(), logits.float(), rtol=1e-3, atol=1e-4):
        raise ConfigError(f"freeze.cached_features=true needs a model whose head ({head}, a {type(layer).__name__}) "
                          "is its last step, taking (N, features); this model's is not: use "
                          "freeze.cached_features=false")


# --- the cache -------------------------------------------------------------------------------------

def probe_features(model: nn.Module, head: str, sets: dict[str, Any], batches_of, cache_root: Path,
                   identity: dict[str, Any], device: torch.device,
                   amp_dtype: torch.dtype | None = None) -> tuple[dict[str, Features], dict[str, Any]]:
    """The features of each of ``sets`` ({split: ImageSet}) at the input of ``model``'s ``head``,
    on ``device``, from the feature cache (extracted first, through ``batches_of(ImageSet)``, the
    evaluation batches of the test-time transform, when it is missing or damaged), and what
    run.json records of it: ``feature_cache`` ({split: its cache folder}), ``feature_cache_built``
    (whether any split was extracted now), ``feature_splits_built`` (which) and the seconds it
    took. Each split is a cache of its own (``split_identity``), so that `transferlab rank`, which
    needs no test split, extracts none, and a cached-probe run of the same candidate afterwards
    reads the training and validation features and extracts only the test split's."""
    start = time.perf_counter()
    features, folders, built = {}, {}, []
    for split, data in sets.items():
        key = split_identity(identity, split)
        folder = Path(cache_root).expanduser() / FEATURES_KIND / cache_key(key)
        extract = {split: lambda data=data: extract_features(model, head, batches_of(data).epoch(1), device, amp_dtype)}
        read, fresh = features_cache(folder, {split: data.labels}, key, extract)
        features[split], folders[split] = read[split].to(device), str(folder)
        if fresh:
            built.append(split)
    return features, {"feature_cache": folders, "feature_cache_built": bool(built), "feature_splits_built": built,
                      "feature_seconds": round(time.perf_counter() - start, 3)}


def split_identity(identity: dict[str, Any], split: str) -> dict[str, Any]:
    """The key of one split's features: ``identity`` (feature_identity's) and the split's name,
    without the training subset's draw for the test split: the test images do not depend on it
    (where they follow data.subset_seed, held out of an image folder or generated, ``identity``'s
    data says so), so runs at every data.fraction, data.per_class or subset seed share them."""
    if split == "test":
        identity = {key: value for key, value in identity.items() if key != "subset"}
    return {**identity, "split": split}


def features_cache(folder: Path, splits: dict[str, torch.Tensor], identity: dict[str, Any],
                   extract: dict[str, Any]) -> tuple[dict[str, Features], bool]:
    """({split: Features}, whether it was built now) from the cache in ``folder``, built first
    when it is missing or damaged. ``splits``: each split's labels, in the order its features come;
    ``extract``: for each split, a callable returning an iterable of (features, labels) batches
    (called only when the cache is built). The features are memory-mapped copy-on-write: the
    tensors are writable (torch wants that) but nothing is written back."""

    def arrays(about: dict[str, Any]) -> Arrays | str:
        dims = about.get("features")
        if not isinstance(dims, int) or about.get("splits") != {split: len(labels) for split, labels in splits.items()}:
            return f"{ABOUT_FILE} does not describe these splits"
        return {name: array for split, labels in splits.items() for name, array in (
            (f"{split}.npy", ((len(labels), dims), np.float32)), (f"{split}_labels.npy", ((len(labels),), np.int64)))}

    def check(cache: Path) -> str | None:
        for split, labels in splits.items():
            if not np.array_equal(np.load(cache / f"{split}_labels.npy"), labels.cpu().numpy()):
                return f"{split}_labels.npy does not hold the labels of the {split} split"
            if not np.isfinite(np.load(cache / f"{split}.npy", mmap_mode="r")).all():
                return f"{split}.npy holds values that are not finite"
        return None

    def load(cache: Path) -> dict[str, Features]:
        return {split: Features(torch.from_numpy(np.load(cache / f"{split}.npy", mmap_mode="c")),
                                torch.from_numpy(np.load(cache / f"{split}_labels.npy"))) for split in splits}

    cache = DiskCache(folder.parent, "feature cache", rebuild="extracting the features again",
                      builder="feature extraction")
    return cache.open(folder.name, arrays=arrays, check=check, load=load,
                      build=lambda temporary: _build(temporary, folder, splits, identity, extract))


def _build(temporary: Path, folder: Path, splits: dict[str, torch.Tensor], identity: dict[str, Any],
           extract: dict[str, Any]) -> dict[str, Any]:
    """Extract each split's features into the cache's ``temporary`` folder; about.json's description."""
    start = time.perf_counter()
    dims = None
    for split, labels in splits.items():
        dims = _write_split(temporary, split, labels, extract[split](), dims)
    seconds = time.perf_counter() - start
    count = sum(len(labels) for labels in splits.values())
    log.info("extracted the features of %d images in %.1f s (%.0f images/s) into %s", count, seconds,
             count / max(seconds, 1e-9), folder)
    return {**identity, "splits": {split: len(labels) for split, labels in splits.items()}, "features": dims,
            "extract_seconds": round(seconds, 2)}


def _write_split(temporary: Path, split: str, labels: torch.Tensor, batches, dims: int | None) -> int:
    """Write one split's features batch by batch into a memory-mapped .npy; their width."""
    array, position = None, 0
    for features, batch_labels in batches:
        if array is None:
            array = allocate(temporary / f"{split}.npy", (len(labels), features.shape[1]), np.float32,
                             "the feature cache", "free some space, or point data.cache_dir elsewhere")
        if not torch.isfinite(features).all():
            raise TransferlabError(f"the backbone's features of the {split} split are not finite (NaN or inf); "
                                   "try precision=fp32")
        array[position:position + len(features)] = features.cpu().numpy()
        if not torch.equal(batch_labels.cpu(), labels[position:position + len(features)].cpu()):
            raise TransferlabError(f"the {split} batches do not come in the order of the {split} split's labels")
        position += len(features)
    if array is None or position != len(labels):
        raise TransferlabError(f"the {split} split gave {position} features for {len(labels)} images")
    array.flush()
    del array
    with open(temporary / f"{split}.npy", "rb+") as handle:
        os.fsync(handle.fileno())
    np.save(temporary / f"{split}_labels.npy", labels.cpu().to(torch.int64).numpy())
    return int(features.shape[1])


# --- the head's training data ----------------------------------------------------------------------

class FeatureBatches:
    """Batches of cached features, as the image pipelines batch images (``Batches``): a training
    epoch in the order ``epoch_generator(seed, epoch)`` draws, which is the image pipeline's order,
    in ``batch_sizes``; an evaluation in order."""

    def __init__(self, data: Features, batch_size: int, train: bool, seed: int):
        self.data = data
        self.train = train
        self.seed = seed
        self.sizes = batch_sizes(len(data), batch_size, train)

    def __len__(self) -> int:
        return len(self.sizes)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = len(self.data)
        if self.train:  # the image pipeline's draw (DeviceLoader): the order comes first from this generator
            order = torch.randperm(count, generator=epoch_generator(self.seed, epoch))
        else:
            order = torch.arange(count)
        for index in torch.split(order.to(self.data.labels.device), self.sizes):
            yield self.data.features[index], self.data.labels[index]


class PhasedBatches:
    """The batches of a run whose head trains on cached features until ``last_feature_epoch`` (LP-FT's
    switch, or the run's last epoch), then on images: ``features`` up to it, ``images`` after."""

    def __init__(self, features: FeatureBatches, images, last_feature_epoch: int):
        self.features, self.images, self.last_feature_epoch = features, images, last_feature_epoch

    def __len__(self) -> int:
        return len(self.features)  # what a progress bar made before the first epoch counts

    def epoch(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return (self.features if epoch <= self.last_feature_epoch else self.images).epoch(epoch)


class HeadOrNetwork(nn.Module):
    """The model as the training loop sees it in such a run: cached features ((N, D)) go to the
    head alone, images ((N, C, H, W)) through the whole network (``network``, maybe compiled)."""

    def __init__(self, network: nn.Module, head: nn.Module):
        super().__init__()
        self.network, self.head = network, head

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(inputs) if inputs.dim() == 2 else self.network(inputs)


# --- L-BFGS logistic regression ----------------------------------------------------------------------

@dataclass(frozen=True)
class LogisticFit:
    """What ``fit_logistic_regression`` chose: the L2 strength, its validation accuracy (a
    fraction) and loss, every value it tried (l2 -> (validation accuracy, validation loss)), and
    the seconds it took."""

    l2: float
    val_accuracy: float
    val_loss: float
    sweep: dict[float, tuple[float, float]] = field(default_factory=dict)
    seconds: float = 0.0


def fit_logistic_regression(head: nn.Linear, train: Features, val: Features,
                            coarse: Sequence[float] = COARSE_L2, fine_steps: int = FINE_STEPS,
                            max_iterations: int = LBFGS_ITERATIONS) -> LogisticFit:
    """Fit ``head`` (its weight and bias, in place) by full-batch L-BFGS on the mean cross-entropy
    of ``train`` plus ``l2 / 2 * ||weight||^2`` (the bias is not penalised), with ``l2`` chosen by its
    accuracy on ``val``: first over ``coarse``, then over ``fine_steps`` log-spaced values each
    side of the best coarse value up to its neighbours. Ties in accuracy (which does not change
    with the weights' scale, so a penalty that only shrinks them ties) go to the lower validation
    loss. The head ends with the weights fitted at the chosen ``l2``."""
    start = time.perf_counter()
    if len(val) == 0:
        raise ConfigError("freeze.probe=lbfgs chooses its L2 strength on the validation split, which is empty; "
                          "set data.val_fraction > 0")
    sweep: dict[float, tuple[float, float]] = {}
    states: dict[float, dict[str, torch.Tensor]] = {}

    def trial(l2: float, warm: dict[str, torch.Tensor] | None) -> None:
        if warm is not None:
            head.load_state_dict(warm)
        _lbfgs(head, train, l2, max_iterations)
        sweep[l2] = _scores(head, val)
        states[l2] = {k: v.detach().clone() for k, v in head.state_dict().items()}

    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    warm = None
    for l2 in sorted(coarse, reverse=True):  # strongest first: each warm-starts the next, weaker one
        trial(l2, warm)
        warm = states[l2]
    ordered = sorted(coarse)
    best = _best(sweep)
    position = ordered.index(best)
    low, high = ordered[max(position - 1, 0)], ordered[min(position + 1, len(ordered) - 1)]
    fine = sorted({float(v) for v in np.geomspace(low, high, 2 * fine_steps + 3)[1:-1]} - set(sweep), reverse=True)
    for l2 in fine:
        trial(l2, states[min((k for k in states if k >= l2), default=best)])
    best = _best(sweep)
    head.load_state_dict(states[best])
    return LogisticFit(best, *sweep[best], dict(sorted(sweep.items())), time.perf_counter() - start)


def _best(sweep: dict[float, tuple[float, float]]) -> float:
    """The l2 of the highest validation accuracy, the lowest validation loss among ties."""
    return max(sweep, key=lambda l2: (sweep[l2][0], -sweep[l2][1], l2))


def _lbfgs(head: nn.Linear, train: Features, l2: float, max_iterations: int) -> None:
    parameters = [head.weight, head.bias]
    optimizer = torch.optim.LBFGS(parameters, lr=1.0, max_iter=max_iterations, history_size=20,
                                  tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")
    features = train.features
    # The one-hot labels, and the logits, laid out (classes, images): W @ X^T is faster than X @ W^T for a
    # few classes, and X^T is only a view.
    one_hot = nn.functional.one_hot(train.labels, head.out_features).T.to(features.dtype).contiguous()
    count = len(train)

    def closure() -> torch.Tensor:
        # The loss and its gradient in closed form (softmax minus one-hot), without autograd: L-BFGS
        # evaluates it some 60 times per L2 value, and on a few thousand features autograd's
        # bookkeeping took longer than the two matrix products.
        with torch.no_grad():
            log_probabilities = torch.log_softmax(torch.addmm(head.bias.unsqueeze(1), head.weight, features.T), dim=0)
            loss = -(log_probabilities * one_hot).sum() / count + 0.5 * l2 * head.weight.pow(2).sum()
            residual = log_probabilities.exp_().sub_(one_hot).div_(count)
            head.weight.grad = torch.addmm(head.weight, residual, features, beta=l2)
            head.bias.grad = residual.sum(dim=1)
        return loss

    optimizer.step(closure)
    if not all(math.isfinite(float(p.detach().abs().max())) for p in parameters):
        raise TransferlabError(f"freeze.probe=lbfgs: the logistic regression diverged at l2={l2:g}")


@torch.no_grad()
def _scores(head: nn.Module, data: Features, batch: int = 65536) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``head`` on ``data``."""
    correct, loss = 0, 0.0
    for i in range(0, len(data), batch):
        logits = head(data.features[i:i + batch]).float()
        labels = data.labels[i:i + batch]
        correct += int((logits.argmax(1) == labels).sum())
        loss += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
    return correct / max(len(data), 1), loss / max(len(data), 1)
