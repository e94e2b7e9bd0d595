"""What a run writes beside its record and checkpoints: a few training images for the report's
sample grid (samples.npz), and save_model's model.pt."""

from __future__ import annotations

import io
from pathlib import Path

import torch
import torch.nn.functional as F

from transferlab import adapt
from transferlab.checkpoint import RESUME_ADVICE, CheckpointWriteError, CheckpointWriter, save_atomically
from transferlab.data import ImageSet
from transferlab.records import write_atomic

MODEL_FILE = "model.pt"
SAMPLE_SIZE = 96  # the largest side of the sample images kept for the report
SAMPLES_PER_CLASS = 4  # images of each class in the report's sample grid...
MAX_SAMPLE_IMAGES = 100  # ...fewer of each where there are many classes


def write_samples(path: Path, data: ImageSet, per_class: int = SAMPLES_PER_CLASS,
                  max_images: int = MAX_SAMPLE_IMAGES) -> None:
    """A few training images of each class (before augmentation) with the class names, for the
    report's sample grid: numpy arrays, so the report reads them without torch.

    The first ``per_class`` images of each class in training-set order (the same images every time),
    fewer of each where the classes are many, so that at most ``max_images`` are kept: 4 of each
    of CIFAR-10's 10 classes, 1 of each of CIFAR-100's 100, 1 of each of the first ``max_images``
    classes of a dataset with more. A class with fewer training images has fewer in the grid."""
    import numpy as np

    per_class = max(1, min(per_class, max_images // max(1, len(data.classes))))
    labels = data.labels.cpu().numpy()
    shown_classes = range(min(len(data.classes), max_images // per_class))
    indices = np.concatenate([np.flatnonzero(labels == label)[:per_class] for label in shown_classes] or [[]])
    indices = torch.from_numpy(indices.astype(np.int64))
    images = data.images[indices]
    if images.shape[-1] > SAMPLE_SIZE:  # an image folder's stored images: thumbnails are enough for a grid
        images = F.interpolate(images.float(), size=(SAMPLE_SIZE, SAMPLE_SIZE), mode="bilinear", antialias=True)
        images = images.round().clamp(0, 255).to(torch.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images.permute(0, 2, 3, 1).cpu().numpy(), labels=labels[indices.numpy()],
                        classes=np.array(data.classes))
    write_atomic(path, buffer.getvalue())


def save_model(model: torch.nn.Module, run_dir: Path, epochs: int, writer: CheckpointWriter) -> None:
    """save_model's model.pt: the plain architecture, adapters merged. When it cannot be written (a
    full disk) the run fails, but keeps the scores of its epochs and the checkpoint after its last
    one (CheckpointEpochs writes it with save_model): the same command then resumes after the last
    epoch and only writes model.pt."""
    try:
        save_atomically(state_dict_on_host(adapt.plain_model(model)), run_dir / MODEL_FILE)
    except CheckpointWriteError as error:
        saved = writer.saved_history[-1]["epoch"] if writer.saved_history else 0
        kept = (f"its scores and the checkpoint after epoch {saved} are kept, and the same command run again only "
                f"writes {MODEL_FILE}" if saved == epochs else
                f"its last checkpoint (after epoch {saved}) could not be saved either, so the same command run "
                "again trains from there")
        raise CheckpointWriteError(f"the run's {epochs} epoch(s) finished, but {MODEL_FILE} could not be saved "
                                   f"({str(error).replace(RESUME_ADVICE, '')}); {kept} once there is room") from error


def state_dict_on_host(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state_dict that ``torchvision.models.get_model(name, num_classes=K)`` (or
    ``timm.create_model(name, num_classes=K)``) loads as it is, K being the run's ``num_classes``."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
