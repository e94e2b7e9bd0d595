"""Model sources are a table (issue 28, section 3): ``transferlab.sources.SOURCES`` maps a model.name
prefix to a source module, every source answers the same functions, and nothing outside the
package asks which library a model comes from. A toy third source, registered in the table, is
built, frozen, sized, normalised and prepared through models.py, schedules.py and prepare.py
alone: the proof that no other module branches on the library."""

from __future__ import annotations

import ast
import inspect
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torchvision
from torch import nn

from transferlab import model_names, models, prepare, schedules
from transferlab.diskcache import file_sha256
from transferlab.errors import ConfigError
from transferlab.records import shorten
from transferlab.sources import SOURCES, Init, source_for, source_of, timm_source, torchvision_source
from transferlab.sources.base import ModelSource

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "transferlab"
SOURCE_MODULES = {"transferlab.sources.timm_source", "transferlab.sources.torchvision_source",
                  "transferlab.sources.local_file"}


def test_model_name_prefixes_pick_the_source():
    assert source_for("timm/resnet50.a1_in1k") is timm_source
    assert source_for("resnet18") is torchvision_source
    assert source_for("no_such_model") is torchvision_source  # the catch-all, whose check names the timm spelling
    with pytest.raises(ConfigError, match=r"model.name='no_such_model' is not a torchvision .* model.name=timm/NAME"):
        models.check_model_name("no_such_model")


def test_a_built_model_names_its_source():
    assert source_of(torchvision.models.resnet18(weights=None)) is torchvision_source
    timm = pytest.importorskip("timm")
    assert source_of(timm.create_model("test_resnet", pretrained=False)) is timm_source


@pytest.mark.parametrize("source", [torchvision_source, timm_source], ids=["torchvision", "timm"])
def test_every_source_answers_every_function_of_the_interface(source):
    wanted = {name: inspect.signature(function) for name, function in vars(ModelSource).items()
              if callable(function) and not name.startswith("_")}
    assert len(wanted) == 13
    for name, signature in wanted.items():
        own = inspect.signature(getattr(source, name))
        assert list(own.parameters) == [p for p in signature.parameters if p != "self"], name


def test_a_model_name_says_its_library_and_tag_to_whoever_imports_no_torch():
    """Composition and the report read a model.name through model_names, the sources' own prefixes."""
    assert set(SOURCES) == set(model_names.LIBRARIES)
    assert [model_names.library(name) for name in ("timm/resnet50.a1_in1k", "timm/vit_tiny", "resnet50")] == [
        "timm", "timm", "torchvision"]
    assert model_names.split("timm/resnet50.a1_in1k") == ("resnet50", "a1_in1k") == timm_source.split_name(
        "timm/resnet50.a1_in1k")
    assert model_names.split("timm/resnet50") == ("resnet50", None) and model_names.split("vgg16") == ("vgg16", None)
    for bad in ("timm/", "timm/resnet50.", "timm/.a1_in1k"):
        with pytest.raises(ConfigError, match=f"model.name='{bad}' is not allowed; write timm/NAME or timm/NAME.TAG"):
            model_names.check_spelling(bad)
    model_names.check_spelling("timm/resnet50")  # timm's default tag


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_module_outside_the_sources_imports_a_source_or_timm():
    outside = [path for path in PACKAGE.rglob("*.py") if "sources" not in path.relative_to(PACKAGE).parts]
    assert len(outside) > 30
    offenders = {str(path.relative_to(PACKAGE)): sorted(found) for path in outside
                 if (found := {m for m in _imports(path) if m in SOURCE_MODULES or m.split(".")[0] == "timm"})}
    assert offenders == {}


# --- a third source, in one entry of the table ------------------------------------------------------

class ToyNet(nn.Sequential):
    pass


def _toy_build(name, pretrained, weights, num_classes, image_size, digest_memo):
    model = ToyNet(OrderedDict(stem=nn.Conv2d(3, 4, 3), body=nn.Conv2d(4, 4, 3), pool=nn.AdaptiveAvgPool2d(1),
                               flat=nn.Flatten(), head=nn.Linear(4, num_classes)))
    return model, Init("toy:v1", "toy", "v1", True, None)


def _toy_check_name(name):
    if name != "toy/net":
        raise ConfigError(f"model.name={name!r}: the toy source has only toy/net")


TOY = SimpleNamespace(
    check_name=_toy_check_name,
    owns_module=lambda model: isinstance(model, ToyNet),
    owns_weights=lambda weights: False,
    build=_toy_build,
    load_file=None,
    heads=lambda name, model: ("head",),
    freeze_presets=lambda name, model: {"early": ("stem",), "middle": ("body",)},
    min_image_size=lambda name: 8,
    preprocessing=lambda model: {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "interpolation": "bilinear",
                                 "crop_pct": 1.0},
    stages=lambda model: [["stem.weight", "stem.bias"], ["body.weight", "body.bias"], ["head.weight", "head.bias"]],
    pretrained_state=lambda name: {},
    weights_place=lambda name, init: ("the toy's weights", "make them again"),
    prepare=lambda name, fetch: f"{name} weights: the toy needs none",
)


@pytest.fixture
def toy_source(monkeypatch):
    toy = SimpleNamespace(**vars(TOY))
    monkeypatch.setitem(SOURCES, "toy/", toy)  # the table is the registry: a new library is one entry
    return toy


def test_a_new_source_in_the_table_is_built_frozen_sized_normalised_and_prepared_through_it(toy_source):
    assert source_for("toy/net") is toy_source and source_for("resnet18") is torchvision_source
    model, init = models.build_model_with_init("toy/net", True, num_classes=3)
    assert source_of(model) is toy_source and source_of(torchvision.models.resnet18(weights=None)) is torchvision_source
    assert model.head.out_features == 3 and init.label == "toy v1"
    assert models.head_name("toy/net", model) == "head"
    assert models.frozen_modules(model, "toy/net", "middle", None) == ("body",)
    assert models.frozen_modules(model, "toy/net", "last_only", None) == ("stem", "body")
    with pytest.raises(ConfigError, match=r"data.image_size=6 is too small for toy/net; it needs at least 8"):
        models.check_image_size(model, "toy/net", 6)
    models.check_image_size(model, "toy/net", 8)
    assert models.preprocessing(model)["mean"] == (0.5, 0.5, 0.5)
    assert schedules.stage_parameter_names(model)[1] == ["body.weight", "body.bias"]
    assert prepare.prepare_weights("toy/net") == "toy/net weights: the toy needs none"
    with pytest.raises(ConfigError, match="the toy source has only toy/net"):
        models.check_model_name("toy/other")


def test_a_weights_file_loads_through_the_source_of_its_architecture(toy_source, tmp_path):
    """model.weights=FILE is the local-file source's; the loading is the architecture's source's."""
    loaded = []

    def load_file(name, path, num_classes, image_size, keep_head):
        loaded.append((name, path.name, num_classes, keep_head))
        return _toy_build(name, False, None, num_classes, image_size, None)[0], "kept" if keep_head else "refused"

    toy_source.load_file = load_file
    weights = tmp_path / "toy.pt"
    weights.write_bytes(b"toy weights")
    model, init = models.build_model_with_init("toy/net", False, str(weights), 5, new_head=True)
    assert loaded == [("toy/net", "toy.pt", 5, False)]  # model.new_head=true: the head may not be kept
    assert (init.init, init.source, init.weights_sha256) == (f"file:{weights}", "file", file_sha256(weights))
    assert init.new_head and init.head == "a new head starts: model.new_head=true"
    assert init.label == shorten(f"{tmp_path.name}/toy.pt")  # a file with no run.json beside it: folder and name
