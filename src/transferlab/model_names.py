"""What a ``model.name`` says of its source, without importing any model library: composing a config
and reading runs for the report import no torch. The sources themselves (transferlab.sources) key
their table by these prefixes.

    timm/NAME[.TAG]   timm's architecture NAME with the weights of its pretraining TAG
    NAME              torchvision's model NAME
"""

from __future__ import annotations

from transferlab.errors import ConfigError

TIMM_PREFIX = "timm/"
LIBRARIES = {TIMM_PREFIX: "timm", "": "torchvision"}  # model.name prefix -> the library that builds it


def library(model_name: str) -> str:
    """Which library builds ``model_name``: ``timm`` or ``torchvision``. timm's resnet50 and
    torchvision's are two implementations, two models (their initialisations differ)."""
    return next(LIBRARIES[prefix] for prefix in sorted(LIBRARIES, key=len, reverse=True)
                if str(model_name).startswith(prefix))


def split(model_name: str) -> tuple[str, str | None]:
    """(architecture, pretraining tag or None): ``timm/resnet50.a1_in1k`` -> (``resnet50``,
    ``a1_in1k``), ``resnet50`` -> (``resnet50``, None)."""
    if not str(model_name).startswith(TIMM_PREFIX):
        return str(model_name), None
    architecture, _, tag = str(model_name).removeprefix(TIMM_PREFIX).partition(".")
    return architecture, tag or None


def check_spelling(model_name: str) -> None:
    """A ConfigError for a timm name with no architecture or an empty tag (``timm/``, ``timm/NAME.``);
    whether the library knows the name is its source's check, once torch is imported."""
    if model_name.startswith(TIMM_PREFIX):
        architecture, dot, tag = model_name.removeprefix(TIMM_PREFIX).partition(".")
        if not architecture or (dot and not tag):
            raise ConfigError(f"model.name={model_name!r} is not allowed; write timm/NAME or timm/NAME.TAG, with "
                              f"a tag after the '.' (timm/NAME alone takes timm's default tag)")
