"""Training subsets, generated data and CIFAR-10 through torchvision's own loader."""

import pytest
import torch

from transferlab.data import ImageSet, load_cifar10, load_cifar100, make_synthetic, stratified_split, subset_indices
from transferlab.errors import TransferlabError
from transferlab.run import load_datasets

from conftest import tiny_config, write_cifar10, write_cifar100


def test_subset_sizes_match_the_fraction():
    for fraction, size in [(0.1, 5000), (0.2, 10000), (0.5, 25000), (1.0, 50000)]:
        indices = subset_indices(50_000, fraction, seed=42)
        assert len(indices) == size
        assert len(set(indices.tolist())) == size
        assert 0 <= int(indices.min()) and int(indices.max()) < 50_000


def test_subsets_are_deterministic_and_nested():
    ten, twenty, fifty = (set(subset_indices(50_000, f, seed=42).tolist()) for f in (0.1, 0.2, 0.5))
    assert ten == set(subset_indices(50_000, 0.1, seed=42).tolist())
    assert ten < twenty < fifty
    assert ten != set(subset_indices(50_000, 0.1, seed=7).tolist())


def test_every_model_and_init_trains_on_the_same_images():
    runs = [tiny_config("data.fraction=0.3", *extra) for extra in
            ([], ["model=alexnet", "data.image_size=64"], ["model=vgg16", "model.pretrained=true"], ["seed=5"])]
    subsets = [load_datasets(config.data)[0] for config in runs]
    for subset in subsets[1:]:
        assert torch.equal(subset.images, subsets[0].images)
        assert torch.equal(subset.labels, subsets[0].labels)
    assert len(subsets[0]) == round(0.3 * 320)


def test_synthetic_data_is_deterministic_cifar_shaped_and_balanced():
    train, test = make_synthetic(200, 50, seed=3)
    again, _ = make_synthetic(200, 50, seed=3)
    other, _ = make_synthetic(200, 50, seed=4)
    assert train.images.shape == (200, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (50, 3, 32, 32)
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    assert not torch.equal(train.images, other.images)
    assert torch.bincount(train.labels, minlength=10).tolist() == [20] * 10
    assert len(train.classes) == 10


def test_cifar10_archive_is_read_by_torchvisions_loader(tmp_path, skip_md5):
    write_cifar10(tmp_path, train_per_batch=30, num_test=40)
    train, test = load_cifar10(tmp_path, download=True)  # extracts the pre-placed archive, no network
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_5").exists()
    assert isinstance(train, ImageSet)
    assert train.images.shape == (150, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (40, 3, 32, 32)
    assert train.classes[0] == "airplane" and train.labels[:3].tolist() == [0, 1, 2]


def test_missing_cifar10_without_download_says_where_to_put_it(tmp_path):
    with pytest.raises(TransferlabError) as error:
        load_cifar10(tmp_path / "empty", download=False)
    message = str(error.value)
    assert "put cifar-10-python.tar.gz" in message and str(tmp_path / "empty") in message
    assert "data=synthetic" in message


def test_stratified_split_holds_out_the_same_share_of_every_class_by_seed_alone():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    kept, held = stratified_split(labels, 0.2, seed=3)
    assert torch.bincount(labels[held]).tolist() == [10, 6, 4]
    assert sorted(kept.tolist() + held.tolist()) == list(range(100))
    again_kept, again_held = stratified_split(labels, 0.2, seed=3)
    assert torch.equal(held, again_held) and torch.equal(kept, again_kept)
    assert not torch.equal(stratified_split(labels, 0.2, seed=4)[1], held)
    tiny = torch.tensor([0, 0, 1, 1, 1])  # 0.1 of two images rounds to none: one is held out all the same
    assert torch.bincount(tiny[stratified_split(tiny, 0.1, seed=0)[1]]).tolist() == [1, 1]


def test_cifar100_archive_is_read_by_torchvisions_loader_with_its_100_fine_classes(tmp_path, skip_md5):
    write_cifar100(tmp_path, num_train=300, num_test=100)
    train, test = load_cifar100(tmp_path, download=True)  # extracts the pre-placed archive, no network
    assert (tmp_path / "cifar-100-python" / "train").exists()
    assert train.images.shape == (300, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (100, 3, 32, 32)
    assert len(train.classes) == 100 and train.classes[:2] == ("fine00", "fine01")
    assert train.labels[:3].tolist() == [0, 1, 2] and int(train.labels.max()) == 99  # fine labels, not coarse


def test_missing_cifar100_says_where_to_put_its_archive(tmp_path):
    with pytest.raises(TransferlabError) as error:
        load_cifar100(tmp_path / "empty", download=False)
    assert "CIFAR-100 is not in data.root=" in str(error.value)
    assert "put cifar-100-python.tar.gz" in str(error.value)
