import pytest
import torch

from conftest import make_dataset
from protosphere.data.scenarios import build_scenario, rotate_images
from protosphere.errors import ScenarioError


def test_class_il_splits_and_relabels(toy_dataset):
    scenario = build_scenario(toy_dataset, "class_il", 2, class_order=[3, 1, 0, 2])
    assert [t.classes for t in scenario.tasks] == [(0, 1), (2, 3)]
    first = scenario.tasks[0]
    assert set(first.train_labels.tolist()) == {0, 1} and set(first.test_labels.tolist()) == {0, 1}
    # new label 0 is original class 3: its images carry class 3's stripe (row 6 of 8)
    zero = first.train_images[first.train_labels == 0]
    assert (zero[:, 0, 6, :] == 255).all()
    assert scenario.class_names[:2] == ["c3", "c1"]
    assert sum(t.num_train for t in scenario.tasks) == len(toy_dataset.train_labels)
    assert first.train_images.shape[1:] == (1, 8, 8)


def test_seeded_class_order_is_reproducible():
    dataset = make_dataset(num_classes=10, per_class_train=2, per_class_test=1)
    a = build_scenario(dataset, "class_il", 5, shuffle_classes=True, seed=1).class_order
    b = build_scenario(dataset, "class_il", 5, shuffle_classes=True, seed=1).class_order
    c = build_scenario(dataset, "class_il", 5, shuffle_classes=True, seed=2).class_order
    assert a == b and a != c and sorted(a) == list(range(10))


def test_uneven_split_and_empty_task_error(toy_dataset):
    scenario = build_scenario(toy_dataset, "class_il", 2, classes_per_task=[3, 1])
    assert [t.classes for t in scenario.tasks] == [(0, 1, 2), (3,)]
    with pytest.raises(ScenarioError, match="at most 4"):
        build_scenario(toy_dataset, "class_il", 5)
    with pytest.raises(ScenarioError, match="permutation"):
        build_scenario(toy_dataset, "class_il", 2, class_order=[0, 0, 1, 2])


def test_data_il_shards_are_disjoint_and_stratified(toy_dataset):
    scenario = build_scenario(toy_dataset, "data_il", 3, seed=0)
    seen = set()
    for task in scenario.tasks:
        rows = {tuple(r) for r in task.train_images.flatten(1).tolist()}
        assert not rows & seen
        seen |= rows
    assert sum(len(t.train_labels) for t in scenario.tasks) == 48
    for task in scenario.tasks:
        assert sorted(task.train_labels.unique().tolist()) == [0, 1, 2, 3]
    assert not scenario.task_il


def test_domain_il_rotations_and_permutations(toy_dataset):
    rot = build_scenario(toy_dataset, "domain_il", 3, domain="rotation", seed=0)
    original = torch.from_numpy(toy_dataset.train_images).permute(0, 3, 1, 2)
    assert torch.equal(rot.tasks[0].train_images, original)
    assert not torch.equal(rot.tasks[1].train_images, original)
    assert rot.extra["domains"][0] == 0.0 and all(0 <= a <= 180 for a in rot.extra["domains"])
    perm = build_scenario(toy_dataset, "domain_il", 2, domain="permutation", seed=0)
    a, b = perm.tasks[0].train_images.flatten(1), perm.tasks[1].train_images.flatten(1)
    assert torch.equal(a.sort(1).values, b.sort(1).values) and not torch.equal(a, b)


def test_rotation_by_90_degrees_matches_rot90():
    images = torch.randint(0, 255, (3, 1, 6, 6), dtype=torch.uint8)
    rotated = rotate_images(images, 90)
    assert torch.equal(rotated, torch.rot90(images, 1, dims=(2, 3))) or torch.equal(
        rotated, torch.rot90(images, -1, dims=(2, 3))
    )


def test_train_fraction_keeps_every_class(toy_dataset):
    scenario = build_scenario(toy_dataset, "class_il", 2, train_fraction=0.1)
    assert all(t.num_train >= 2 for t in scenario.tasks)
