"""The `model` group's options for every torchvision classification model: a Hydra config source
(``transferlab://models``) that makes ``model=NAME`` mean ``model.name: NAME``, and the search-path
plugin that puts it after conf/ (so that the files of conf/model/ win) when the app's configs are
transferlab's, and only then: Hydra runs search-path plugins for every Hydra app installed beside
transferlab. The source answers from the names shipped in transferlab.torchvision_models and holds
no configs: Hydra copies its whole config repository once per config group when `--help` lists
them, and 72 configs stored in its ConfigStore made `--help` 0.3 to 0.4 s slower
(docs/performance.md). Hydra imports this module at every start: no torch here."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

from transferlab.torchvision_models import CLASSIFICATION_MODELS

GROUP = "model"
SOURCE = "transferlab://models"


class TransferlabModelSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from transferlab.composition import config_dir

        ours = config_dir().resolve()
        if any(entry.provider == "main" and Path(entry.path.removeprefix("file://")).resolve() == ours
               for entry in search_path.get_path()):
            search_path.append(provider="transferlab", path=SOURCE)


class TransferlabModelSource(ConfigSource):
    @staticmethod
    def scheme() -> str:
        return "transferlab"

    def _model(self, config_path: str) -> Optional[str]:
        """The model a path such as ``model/resnet34.yaml`` names, if it is one of ours."""
        group, _, name = config_path.strip("/").partition("/")
        name = name.removesuffix(".yaml")
        return name if group == GROUP and name in CLASSIFICATION_MODELS else None

    def load_config(self, config_path: str) -> ConfigResult:
        name = self._model(config_path)
        if name is None:
            raise ConfigLoadError(f"{self.full_path()} has no config {config_path}")
        return ConfigResult(config=OmegaConf.create({"name": name}), path=self.full_path(), provider=self.provider,
                            header={"package": None})

    def available(self) -> bool:
        return self.path == "models"

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") in ("", GROUP)

    def is_config(self, config_path: str) -> bool:
        return self._model(config_path) is not None

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> list[str]:
        path = config_path.strip("/")
        if path == "" and results_filter in (None, ObjectType.GROUP):
            return [GROUP]
        if path == GROUP and results_filter in (None, ObjectType.CONFIG):
            return list(CLASSIFICATION_MODELS)
        return []
