"""The tests' fixtures. Helpers that are not fixtures (the tiny config, CIFAR archives and image
folders written by the test, the `transferlab` command in a subprocess) are in tests/helpers/:
``from helpers import tiny_config``."""

from __future__ import annotations

import pytest


@pytest.fixture
def skip_md5(monkeypatch):
    """Our archive is not the real one, so torchvision's MD5 check is switched off (tests only)."""
    import torchvision.datasets.utils as utils

    monkeypatch.setattr(utils, "check_md5", lambda *args, **kwargs: True)
