"""Datasets, the attacker/victim split and on-device augmentation."""
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

import kdbench
from kdbench.data import augment, stratified_split
from kdbench_plugins.datasets.imagefolder import ImageFolder


def test_digits_is_embedded_uint8_and_upsampled(bench):
    data = bench.data
    assert data.train_images.dtype == torch.uint8 and data.train_images.shape[1:] == (1, 16, 16)
    assert len(data.train_images) + len(data.test_images) == 1797
    assert data.info.num_classes == 10 and not data.info.hflip


def test_split_is_stratified_seeded_and_disjoint():
    labels = torch.arange(10).repeat_interleave(40)
    split = stratified_split(labels, 0.5, 0.1, seed=3)
    assert set(split.attacker.tolist()).isdisjoint(split.victim.tolist())
    assert len(split.attacker) + len(split.victim) == len(labels)
    assert set(split.defender.tolist()) <= set(split.victim.tolist())
    assert torch.bincount(labels[split.attacker]).tolist() == [20] * 10
    assert torch.bincount(labels[split.defender]).tolist() == [2] * 10
    assert torch.equal(split.attacker, stratified_split(labels, 0.5, 0.1, seed=3).attacker)
    assert not torch.equal(split.attacker, stratified_split(labels, 0.5, 0.1, seed=4).attacker)


def test_augment_translates_each_image_within_the_padding():
    images = torch.zeros(64, 1, 16, 16)
    images[:, :, 8, 8] = 1.0
    out = augment(images, hflip=False, generator=torch.Generator().manual_seed(0))
    positions = out[:, 0].flatten(1).argmax(1)
    rows, cols = positions // 16, positions % 16
    assert out.shape == images.shape and torch.all(out.sum((1, 2, 3)) == 1)
    assert rows.sub(8).abs().max() <= 2 and cols.sub(8).abs().max() <= 2 and len(set(positions.tolist())) > 5


def test_augment_is_a_padded_crop_and_flip_of_each_image_in_any_dtype():
    """Against each image cut out of its zero-padded copy by hand, at the offsets and flips that
    the generator draws (dy, then dx, then the flip coins); uint8 and float agree."""
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = augment(images, hflip=True, generator=torch.Generator().manual_seed(5))
    draws = torch.Generator().manual_seed(5)
    dy, dx = torch.randint(0, 3, (16,), generator=draws), torch.randint(0, 3, (16,), generator=draws)
    flips = torch.rand(16, generator=draws) < 0.5
    padded = torch.zeros(16, 3, 10, 10, dtype=torch.uint8)
    padded[:, :, 1:9, 1:9] = images
    for i in range(16):
        crop = padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
        assert torch.equal(out[i], crop.flip(2) if flips[i] else crop)
    assert flips.any() and not flips.all() and out.dtype == torch.uint8
    floats = augment(images.float() / 255, hflip=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(floats, out.float() / 255)


def _write_folder(root, split, per_class, size=12):
    for cls in ("cat", "dog"):
        folder = root / split / cls
        folder.mkdir(parents=True)
        for i in range(per_class):
            value = 30 if cls == "cat" else 220
            Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(folder / f"{i:04d}.png")


@pytest.mark.parametrize("archived", [False, True])
def test_imagefolder_reads_folders_and_archives_and_caches(tmp_path, archived):
    root = tmp_path / "pets"
    _write_folder(root, "train", 5)
    _write_folder(root, "test", 2)
    if archived:
        for split in ("train", "test"):
            with tarfile.open(root / f"{split}.tar.gz", "w:gz") as tar:
                tar.add(root / split, arcname=split)
            for path in sorted((root / split).rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            (root / split).rmdir()
    data = ImageFolder(root=str(root), size=8, max_per_class=3).load(tmp_path / "cache")
    assert data.info.class_names == ("cat", "dog") and data.train_images.shape == (6, 3, 8, 8)
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 1] and len(data.test_images) == 4
    assert data.train_images[0].float().mean() < 60 < data.train_images[-1].float().mean()
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1


def test_imagefolder_missing_root_is_a_config_error(tmp_path):
    with pytest.raises(kdbench.ConfigError, match="dataset root not found"):
        ImageFolder(root=str(tmp_path / "absent")).load(tmp_path)
