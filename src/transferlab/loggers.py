"""Optional per-epoch metric loggers, beside metrics.csv (which every run writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferlab.errors import ConfigError

TENSORBOARD_DIR = "tensorboard"
# history key -> TensorBoard tag
TAGS = {
    "train_loss": "loss/train", "test_loss": "loss/test", "train_acc": "accuracy/train", "test_acc": "accuracy/test",
    "epoch_seconds": "time/epoch_seconds", "images_per_second": "time/images_per_second",
}


class TensorBoardLogger:
    """Writes each epoch's metrics as TensorBoard scalars under <run dir>/tensorboard/."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ConfigError("logger=tensorboard needs the tensorboard package; install it with "
                              "pip install 'transferlab[tensorboard]'") from error
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR))

    def log_epoch(self, entry: dict[str, Any]) -> None:
        for key, tag in TAGS.items():
            self.writer.add_scalar(tag, entry[key], global_step=entry["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class NoLogger:
    def log_epoch(self, entry: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def make_logger(name: str, run_dir: Path) -> TensorBoardLogger | NoLogger:
    return TensorBoardLogger(run_dir) if name == "tensorboard" else NoLogger()
