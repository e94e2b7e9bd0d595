"""What the tests share that is not a fixture (fixtures stay in conftest.py): ``from helpers import
tiny_config``. pyproject.toml's ``pythonpath = ["tests"]`` makes ``helpers`` importable, from the
repository root (`pytest`, `.ci/run`) or anywhere else pytest is started with this configuration."""

from helpers.cli import TRANSFERLAB, cli_env, start_transferlab, transferlab
from helpers.datasets import IMAGE_FOLDER_CLASSES, IMAGE_KINDS, write_cifar10, write_cifar100, write_image_folder
from helpers.runs import DRY_RUN, TINY, At, compose_config, interrupt, tiny_config

__all__ = ["DRY_RUN", "IMAGE_FOLDER_CLASSES", "IMAGE_KINDS", "TINY", "TRANSFERLAB", "At", "cli_env", "compose_config",
           "interrupt", "start_transferlab", "tiny_config", "transferlab", "write_cifar10", "write_cifar100",
           "write_image_folder"]
