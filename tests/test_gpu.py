"""Runs on a CUDA GPU: mixed precision, channels_last and the device pipeline for real.
Skipped where there is no GPU (select them with `-m gpu`)."""

import pytest
import torch

from transferlab.run import run_training

from conftest import tiny_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("precision, recorded", [("auto", "bfloat16"), ("fp16", "float16"), ("fp32", "fp32")])
def test_a_cuda_run_learns_in_each_precision(tmp_path, precision, recorded):
    config = tiny_config("device=cuda", f"precision={precision}", "data.num_train=2000", "data.num_test=500",
                         "train.epochs=3", "train.batch_size=64")
    record = run_training(config, tmp_path)
    assert record["status"] == "completed", record.get("error")
    assert record["device"].startswith("cuda") and record["precision"] == recorded
    assert record["test_acc"] > 0.5


def test_deterministic_cuda_runs_repeat_exactly(tmp_path):
    config = tiny_config("device=cuda", "precision=fp32", "deterministic=true", "data.pipeline=reference")
    first = run_training(config, tmp_path / "a")
    second = run_training(config, tmp_path / "b")
    assert first["history"][0]["train_loss"] == second["history"][0]["train_loss"]
