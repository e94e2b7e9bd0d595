"""Training subsets, generated data and CIFAR-10 through torchvision's own loader."""

import pytest
import torch

from transferlab.data import ImageSet, load_cifar10, load_cifar100, make_synthetic, stratified_split, subset_indices
from transferlab.data.images import smallest_fraction, stratified_count
from transferlab.errors import ConfigError, TransferlabError
from transferlab.run import load_datasets

from helpers import tiny_config, write_cifar10, write_cifar100


def old_uniform_draw(num_items: int, fraction: float, seed: int) -> torch.Tensor:
    """transferlab's subset before data.sampling existed, as it was written then."""
    size = max(1, round(fraction * num_items))
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))
    return order[:size].sort().values


# An unbalanced 3-class set, shuffled: 500, 300 and 200 images.
UNBALANCED = torch.tensor([0] * 500 + [1] * 300 + [2] * 200)[
    torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
CLASSES = ("ant", "bee", "cow")


def per_class(indices: torch.Tensor, labels: torch.Tensor = UNBALANCED) -> list[int]:
    return torch.bincount(labels[indices], minlength=3).tolist()


def test_a_stratified_subset_keeps_each_classs_share():
    for fraction, counts in [(0.1, [50, 30, 20]), (0.2, [100, 60, 40]), (0.5, [250, 150, 100]), (0.003, [2, 1, 1]),
                             (1.0, [500, 300, 200])]:
        indices = subset_indices(UNBALANCED, CLASSES, seed=42, fraction=fraction)
        assert per_class(indices) == counts, fraction
        assert len(set(indices.tolist())) == len(indices) and torch.equal(indices, indices.sort().values)


def test_stratified_subsets_are_nested_across_fractions_and_across_k_and_fixed_by_the_seed():
    def draw(seed: int = 42, **size) -> set[int]:
        return set(subset_indices(UNBALANCED, CLASSES, seed, **size).tolist())

    ten, twenty, fifty = (draw(fraction=f) for f in (0.1, 0.2, 0.5))
    assert ten < twenty < fifty
    by_k = [draw(per_class=k) for k in (1, 2, 5, 10, 25, 100, 200)]
    assert all(smaller < larger for smaller, larger in zip(by_k, by_k[1:]))
    assert [per_class(torch.tensor(sorted(s))) for s in by_k[:3]] == [[1, 1, 1], [2, 2, 2], [5, 5, 5]]
    assert draw(fraction=0.1) == ten and draw(per_class=5) == by_k[2]  # the seed alone fixes the draw
    assert draw(seed=43, fraction=0.1) != ten and draw(seed=43, per_class=5) != by_k[2]
    assert per_class(torch.tensor(sorted(draw(seed=43, fraction=0.1)))) == [50, 30, 20]


def test_uniform_sampling_is_the_draw_of_before_stratified_subsets():
    labels = torch.arange(50_000) % 10
    for fraction, seed in [(0.1, 42), (0.2, 42), (0.5, 42), (1.0, 42), (0.1, 7), (0.3, 123)]:
        drawn = subset_indices(labels, tuple("abcdefghij"), seed, fraction=fraction, sampling="uniform")
        assert torch.equal(drawn, old_uniform_draw(50_000, fraction, seed)), (fraction, seed)
    # ... and, unlike it, refuses a draw that leaves a class out.
    with pytest.raises(ConfigError, match=r"^data.fraction=0.0001 with data.sampling=uniform draws no image of class"):
        subset_indices(labels, tuple("abcdefghij"), 42, fraction=0.0001, sampling="uniform")


@pytest.mark.parametrize("size, message", [
    (dict(fraction=0.002), "data.fraction=0.002 gives class 'cow' (200 training image(s)) no image; the smallest "
                           "data.fraction allowed here is 0.0025"),
    (dict(per_class=201), "data.per_class=201 is more than class 'cow' has (200 training image(s)); data.per_class "
                          "must be at most 200 here"),
])
def test_a_subset_that_would_leave_a_class_short_is_refused_in_one_line(size, message):
    with pytest.raises(ConfigError) as error:
        subset_indices(UNBALANCED, CLASSES, 42, **size)
    assert str(error.value) == message
    if "fraction" in size:  # the smallest fraction it names does draw one image of the smallest class
        assert per_class(subset_indices(UNBALANCED, CLASSES, 42, fraction=0.0025)) == [1, 1, 1]


def test_the_smallest_fraction_allowed_takes_one_image_and_a_bit_less_takes_none():
    for count in (1, 3, 7, 10, 140, 5000):
        smallest = smallest_fraction(count)
        assert stratified_count(smallest, count) == 1, count
        assert stratified_count(smallest * 0.99, count) == 0, count
    assert stratified_count(0.05, 10) == 1 and stratified_count(0.1, 5000) == 500 and stratified_count(0.3, 32) == 10


def test_every_model_and_init_trains_on_the_same_images():
    runs = [tiny_config("data.fraction=0.3", *extra) for extra in
            ([], ["model=alexnet", "data.image_size=64"], ["model=vgg16", "model.pretrained=true"], ["seed=5"])]
    subsets = [load_datasets(config.data, config.effective_subset_seed)[0] for config in runs]
    for subset in subsets[1:]:
        assert torch.equal(subset.images, subsets[0].images)
        assert torch.equal(subset.labels, subsets[0].labels)
    assert torch.bincount(subsets[0].labels).tolist() == [10] * 10  # 0.3 of each class's 32 images


def test_a_repeat_draws_another_subset_of_the_same_data_and_k_per_class_works_for_synthetic_data():
    first, again, repeat = (tiny_config("data.fraction=null", "data.per_class=5", *extra)
                            for extra in ([], [], ["repeat=1"]))
    (train, test), (same, _), (other, other_test) = (load_datasets(c.data, c.effective_subset_seed)
                                                     for c in (first, again, repeat))
    assert torch.bincount(train.labels).tolist() == torch.bincount(other.labels).tolist() == [5] * 10
    assert torch.equal(train.images, same.images)
    assert not torch.equal(train.images, other.images)
    assert torch.equal(test.images, other_test.images)  # every repeat is scored on the same test images


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
