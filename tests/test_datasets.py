"""The dataset table (transferlab.datasets.DATASETS) is what loading, `prepare`, run folders, result
identity and run.json's dataset fields read: every data.name is one entry, and no chain of
``if data.name == ...`` decides anything beside it."""

import dataclasses

import pytest
import torch

import transferlab.datasets as datasets_module
from transferlab.config import DATASETS, DataConfig
from transferlab.identity import result_config
from transferlab.composition import compose_config
from transferlab.run_folders import run_dirname
from transferlab.data import ImageSet, load_datasets
from transferlab.datasets import DATASETS as TABLE
from transferlab.datasets import data_source, dataset_name, feature_source
from transferlab.prepare import prepare_data


def _images(count: int, classes: int = 2) -> ImageSet:
    labels = torch.arange(count) % classes
    images = labels.view(-1, 1, 1, 1).expand(count, 3, 4, 4).to(torch.uint8).contiguous()
    return ImageSet(images, labels, tuple(f"class{c}" for c in range(classes)))


@pytest.mark.parametrize("name", list(TABLE))
def test_the_table_entry_loads_prepares_and_names_each_dataset(monkeypatch, name, tmp_path):
    calls = []

    def load(data, show_progress):
        calls.append(("load", data.name, show_progress))
        return _images(20), _images(6)

    def prepare(data):
        calls.append(("prepare", data.name))
        return f"{data.name}: ready"

    spec = dataclasses.replace(TABLE[name], load=load, prepare=prepare, display_name=lambda data: f"shown {data.name}",
                               describe=lambda data: {"from": data.name})
    monkeypatch.setitem(datasets_module.DATASETS, name, spec)
    data = DataConfig(name=name, root=str(tmp_path), fraction=0.5)
    train, test = load_datasets(data, subset_seed=0, show_progress=True)
    assert (len(train), len(test)) == (10, 6)  # the entry's sets, the subset drawn from its training set
    assert prepare_data(data) == f"{name}: ready"
    assert calls == [("load", name, True), ("prepare", name)]
    assert dataset_name(data) == f"shown {name}" and data_source(data) == {"from": name}


def test_the_schema_offers_the_tables_names_in_its_order():
    assert DATASETS == tuple(TABLE) == ("cifar10", "cifar100", "imagefolder", "synthetic", "digits")


@pytest.mark.parametrize("name", list(TABLE))
def test_each_datasets_config_file_gives_the_transforms_of_its_entry(name):
    data = compose_config([f"data={name}"]).data
    composed = {"augment": data.augment, "normalize": data.normalize, "test_crop": data.test_crop,
                "crop_scale": list(data.crop_scale)}
    assert composed == dict(TABLE[name].transforms)


def test_only_an_image_folder_is_named_by_its_folder_and_keeps_its_root(tmp_path):
    folder = tmp_path / "flowers"
    for name in TABLE:
        data = DataConfig(name=name, root=str(folder))
        expected = "flowers" if name == "imagefolder" else name
        assert dataset_name(data) == expected
        assert (data_source(data) is not None) == (name in ("imagefolder", "digits"))  # digits: its fixed split
        config = {"force": False, "data": {"name": name, "root": str(folder), "num_workers": 2}}
        kept = result_config(config)["data"]
        assert ("root" in kept) == (name == "imagefolder") and "num_workers" not in kept
        assert run_dirname("seed=1", name, str(folder)).endswith(f"data.root={folder}".replace("/", "_")) == (
            name == "imagefolder")


def test_a_new_identity_key_in_the_table_keeps_that_key_in_the_result_config(monkeypatch):
    spec = dataclasses.replace(TABLE["cifar10"], identity_keys=("data.root",))
    monkeypatch.setitem(datasets_module.DATASETS, "cifar10", spec)
    assert result_config({"data": {"name": "cifar10", "root": "/elsewhere"}})["data"] == {"name": "cifar10",
                                                                                          "root": "/elsewhere"}


def test_the_feature_caches_key_holds_what_makes_each_datasets_images(tmp_path, monkeypatch):
    """The feature cache's key (probe_fit.run_feature_identity) reads the dataset table, as nothing
    asks ``if data.name == ...``: CIFAR's name alone, data=synthetic's sizes and seed, an image
    folder's content (an image changed is another key), its stored size and test split."""
    import numpy as np
    from PIL import Image

    assert feature_source(DataConfig(name="cifar10")) == {"name": "cifar10"}
    assert feature_source(DataConfig(name="synthetic", num_train=8, num_test=4, subset_seed=3)) == {
        "name": "synthetic", "num_train": 8, "num_test": 4, "seed": 3}
    for name in ("cat", "dog"):
        (tmp_path / "train" / name).mkdir(parents=True)
        for index in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * index, np.uint8)).save(tmp_path / "train" / name / f"{index}.png")
    folder = DataConfig(name="imagefolder", root=str(tmp_path), image_size=32, stored_size=32, test_fraction=0.5,
                        subset_seed=7)
    key = feature_source(folder)
    assert list(key) == ["name", "content", "stored_size", "test_fraction", "test_seed"]
    assert (key["name"], key["stored_size"], key["test_fraction"], key["test_seed"]) == ("imagefolder", 32, 0.5, 7)
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "train" / "dog" / "1.png")
    assert feature_source(folder)["content"] != key["content"]
    spec = dataclasses.replace(TABLE["cifar10"], feature_key=lambda data: {"root": data.root})
    monkeypatch.setitem(datasets_module.DATASETS, "cifar10", spec)  # a new entry's key comes from its own field
    assert feature_source(DataConfig(name="cifar10", root="/here")) == {"name": "cifar10", "root": "/here"}
