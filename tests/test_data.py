"""Datasets, the attacker/victim split and on-device augmentation."""
import tarfile
import types

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


def test_resized_crop_is_torchvisions_crop_then_resize():
    """One box against torchvision's ``resized_crop`` (crop, then bilinear resize): equal away
    from the border, where torchvision reads only the crop and the single grid_sample also
    its neighbours; the whole image unflipped is the image itself; a flip mirrors the crop."""
    from torchvision.transforms.v2 import functional as TF

    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    box = torch.tensor([[4.0, 6.0, 16.0, 16.0], [0.0, 0.0, 32.0, 32.0]])
    out = kdbench.data.resized_crop(images, box, torch.tensor([False, False]))
    reference = TF.resized_crop(images[0], 4, 6, 16, 16, [32, 32], antialias=False)
    assert torch.allclose(out[0, :, 1:-1, 1:-1], reference[:, 1:-1, 1:-1], atol=1e-5)
    assert torch.allclose(out[1], images[1], atol=1e-6)
    flipped = kdbench.data.resized_crop(images, box, torch.tensor([True, True]))
    assert torch.allclose(flipped, out.flip(3), atol=1e-5)
    as_uint8 = kdbench.data.resized_crop((images * 255).round().to(torch.uint8), box, torch.tensor([False, True]))
    assert as_uint8.dtype == torch.uint8 and torch.equal(as_uint8[1], (images[1] * 255).round().to(torch.uint8).flip(2))


def test_resized_crop_boxes_follow_torchvisions_ranges():
    """10,000 boxes of a 224-px image: inside it, of area 8 %–100 % and aspect 3/4–4/3 up to
    the rounding of their sides, at positions covering the image; a seeded draw repeats."""
    boxes = kdbench.data.resized_crop_boxes(10_000, 224, torch.Generator().manual_seed(0))
    top, left, height, width = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + height <= 224).all() and (left + width <= 224).all()
    area = height * width / 224 ** 2
    assert area.min() > 0.075 and area.max() <= 1.0 and 0.4 < area.mean() < 0.6
    aspect = width / height
    assert aspect.min() > 0.74 and aspect.max() < 1.35
    assert top.max() > 150 and left.max() > 150
    assert torch.equal(boxes, kdbench.data.resized_crop_boxes(10_000, 224, torch.Generator().manual_seed(0)))


def test_augment_with_the_resized_crop_keeps_the_shape_and_dtype():
    images = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8)
    out = augment(images, hflip=True, generator=torch.Generator().manual_seed(1), crop="resized")
    assert out.shape == images.shape and out.dtype == torch.uint8 and not torch.equal(out, images)


def _write_folder(root, split, per_class, size=12):
    for cls in ("cat", "dog"):
        folder = root / split / cls
        folder.mkdir(parents=True)
        for i in range(per_class):
            value = 30 if cls == "cat" else 220
            Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(folder / f"{i:04d}.png")


def test_take_accepts_any_index_and_moves_the_rows():
    images = torch.arange(5 * 4, dtype=torch.uint8).view(5, 1, 2, 2)
    assert torch.equal(kdbench.take(images, torch.tensor([3, 1])), torch.stack([images[3], images[1]]))
    mask = torch.tensor([True, False, False, True, False])
    assert torch.equal(kdbench.take(images, mask, "cpu"), torch.stack([images[0], images[3]]))
    moved = kdbench.take(images, mask, "meta")  # another device: gathered on the host, then copied
    assert moved.device.type == "meta" and moved.shape == (2, 1, 2, 2) and moved.dtype == torch.uint8

    kdbench.put(images, torch.tensor([4]), torch.tensor([[[[0.5, 1.5], [-1.0, 0.2]]]]))  # clamped, on the 8-bit grid
    assert images[4].flatten().tolist() == [128, 255, 0, 51]  # round(127.5) = 128, round(51.0) = 51


def test_inference_on_the_cpu_takes_at_most_128_images_a_pass_and_gives_the_same_logits():
    """Whatever batch the caller names, the CPU sees passes of at most 128 images (they stay
    in the caches), for logits and penultimate features alike; the small CNN's logits are
    those of one pass over the whole batch up to rounding (the passes run channels_last)."""
    from kdbench_plugins.architectures.small_cnn import SmallCNN

    torch.manual_seed(0)
    info = kdbench.DatasetInfo("d", 10, 1, 16, (0.5,), (0.25,), tuple("0123456789"))
    network = kdbench.Network(SmallCNN(10, 1, 8), info)
    seen = []
    network.body.stages[0].register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    images = torch.randint(0, 256, (300, 1, 16, 16), dtype=torch.uint8)
    logits = kdbench.logits(network, images, 4096)
    assert seen == [128, 128, 44]
    with torch.no_grad():
        assert torch.allclose(logits, network(kdbench.to_float(images)), rtol=1e-5, atol=1e-5)
    seen.clear()
    kdbench.logits(network, images, 100)  # a smaller batch is the caller's to keep
    kdbench.penultimate(network, images, 4096)
    assert seen == [100, 100, 100, 128, 128, 44]


def test_training_images_stay_on_the_host_where_they_exceed_the_device_fraction(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(total_memory=1000))
    assert kdbench.fits_on_device(500, "cuda", 0.5) and not kdbench.fits_on_device(501, "cuda", 0.5)
    assert kdbench.fits_on_device(10**15, "cpu", 0.0)  # on the CPU the host is the device

    info = kdbench.DatasetInfo("tiny", 2, 1, 2, (0.5,), (0.25,), ("a", "b"))
    data = kdbench.ImageData(info, torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]),
                             torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1]))
    seen = []
    monkeypatch.setattr(kdbench.data, "fits_on_device", lambda nbytes, device, fraction: seen.append(nbytes) or False)
    placed = kdbench.place(data, "meta", 0.5, copies=3)
    assert seen == [3 * 16]  # three copies of 4 images of 4 bytes
    assert placed.train_images.device.type == "cpu"  # streamed: only the training images stay behind
    assert {t.device.type for t in (placed.train_labels, placed.test_images, placed.test_labels)} == {"meta"}


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


CINIC_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _write_cinic(root, counts):
    """CINIC-10's layout, ``counts[split]`` 32-px PNGs per class, each of one grey level:
    10·label + 1 in train, 10·label + 3 in valid, 10·label + 5 in test."""
    for split, count in counts.items():
        offset = {"train": 1, "valid": 3, "test": 5}[split]
        for label, cls in enumerate(CINIC_CLASSES):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((32, 32, 3), 10 * label + offset, np.uint8)).save(folder / f"cifar10-{split}-{i}.png")


def test_cinic10_keeps_cifar10_ids_adds_valid_on_request_and_caches(tmp_path):
    from kdbench_plugins.datasets.cinic10 import Cinic10

    root = tmp_path / "cinic"
    _write_cinic(root, {"train": 3, "valid": 2, "test": 1})
    data = Cinic10(root=str(root)).load(tmp_path / "cache")
    assert data.info.class_names == CINIC_CLASSES and data.info.num_classes == 10 and data.info.hflip
    assert data.train_images.shape == (30, 3, 32, 32) and data.train_labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert data.train_images[:, 0, 0, 0].tolist() == [10 * c + 1 for c in range(10) for _ in range(3)]
    assert data.test_labels.tolist() == list(range(10)) and data.test_images[:, 0, 0, 0].tolist() == [10 * c + 5 for c in range(10)]
    # grey levels 1, 11, …, 91 over 3 images of 32×32 pixels each: mean 46/255, and the
    # sample standard deviation of those 30,720 pixel values per channel
    pixels = np.repeat(np.arange(10) * 10 + 1, 3 * 32 * 32) / 255
    assert data.info.mean == pytest.approx((46 / 255,) * 3, abs=1e-6)
    assert data.info.std == pytest.approx((pixels.std(ddof=1),) * 3, abs=1e-7)

    with_valid = Cinic10(root=str(root), include_valid=True, max_per_class=1).load(tmp_path / "cache")
    assert with_valid.train_images.shape[0] == 20
    assert sorted(with_valid.train_images[:, 0, 0, 0].tolist()) == sorted([10 * c + 1 for c in range(10)] + [10 * c + 3 for c in range(10)])
    assert len(list((tmp_path / "cache").glob("cinic10-*.safetensors"))) == 2
    for png in root.rglob("*.png"):
        png.unlink()  # later loads read the cache only
    assert torch.equal(Cinic10(root=str(root)).load(tmp_path / "cache").train_images, data.train_images)


def test_cinic10_refuses_another_dataset_in_its_root(tmp_path):
    from kdbench_plugins.datasets.cinic10 import Cinic10

    _write_folder(tmp_path / "pets", "train", 1)
    _write_folder(tmp_path / "pets", "test", 1)
    with pytest.raises(kdbench.ConfigError, match="holds classes cat, dog, not CINIC-10's airplane"):
        Cinic10(root=str(tmp_path / "pets")).load(tmp_path / "cache")


def _write_gtsrb_torchvision(root, train_counts, test_labels):
    """torchvision's GTSRB layout: Training/<class:05d>/*.ppm, Final_Test/Images/*.ppm with
    GT-final_test.csv; every sign a 40×30 image of one colour (red = 5·label)."""
    base = root / "gtsrb"
    for label, count in train_counts.items():
        folder = base / "GTSRB" / "Training" / f"{label:05d}"
        folder.mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((30, 40, 3), 5 * label, np.uint8)).save(folder / f"00000_{i:05d}.ppm")
    test = base / "GTSRB" / "Final_Test" / "Images"
    test.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i, label in enumerate(test_labels):
        Image.fromarray(np.full((30, 40, 3), 5 * label, np.uint8)).save(test / f"{i:05d}.ppm")
        rows.append(f"{i:05d}.ppm;40;30;0;0;39;29;{label}")
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")


def test_gtsrb_from_torchvision_resizes_keeps_imbalance_and_never_flips(tmp_path):
    from kdbench_plugins.datasets.gtsrb import Gtsrb

    counts = {label: 1 for label in range(43)} | {0: 4, 42: 2}
    _write_gtsrb_torchvision(tmp_path, counts, [42, 0, 7])
    data = Gtsrb(root=str(tmp_path)).load(tmp_path / "cache")
    assert data.info.num_classes == 43 and not data.info.hflip and data.info.size == 32
    assert data.train_images.shape == (47, 3, 32, 32) and data.train_images.dtype == torch.uint8
    expected = [label for label in range(43) for _ in range(counts[label])]  # 4, 1, …, 1, 2: the imbalance kept
    assert data.train_labels.tolist() == expected
    assert data.train_images[:, 0].flatten(1).float().mean(1).tolist() == [5 * label for label in expected]
    assert data.test_labels.tolist() == [42, 0, 7] and data.test_images[:, 0, 5, 5].tolist() == [210, 0, 35]
    small = Gtsrb(root=str(tmp_path), size=16, max_per_class=2).load(tmp_path / "cache")
    assert small.train_images.shape == (45, 3, 16, 16) and small.train_labels.tolist()[:3] == [0, 0, 1]


def test_gtsrb_from_an_image_folder_copy_never_flips(tmp_path):
    from kdbench_plugins.datasets.gtsrb import Gtsrb

    _write_folder(tmp_path / "signs", "train", 2, size=20)
    _write_folder(tmp_path / "signs", "test", 1, size=20)
    data = Gtsrb(root=str(tmp_path / "signs"), size=8).load(tmp_path / "cache")
    assert data.train_images.shape == (4, 3, 8, 8) and not data.info.hflip


def test_cifar100_from_a_torchvision_layout_keeps_its_fine_labels(tmp_path, monkeypatch):
    """torchvision's pickles (``cifar-100-python/{train,test,meta}``) written here; their MD5
    checks, which only real files pass, are switched off.  Image i of the training pickle has
    every pixel equal to i, so the kept images say which rows were kept."""
    import pickle

    import torchvision

    from kdbench_plugins.datasets.cifar100 import Cifar100

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = [f"class{c:03d}" for c in range(100)]
    train_labels = [c for _ in range(2) for c in range(100)]  # two rounds of the 100 classes
    splits = {"train": train_labels, "test": list(range(100))[::-1]}
    for split, labels in splits.items():
        data = np.repeat(np.arange(len(labels), dtype=np.uint8)[:, None], 3072, axis=1)
        (folder / split).write_bytes(pickle.dumps({"data": data, "fine_labels": labels, "coarse_labels": [0] * len(labels)}))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": names}))
    monkeypatch.setattr(torchvision.datasets.CIFAR100, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)

    data = Cifar100(root=str(tmp_path)).load(tmp_path / "cache")
    assert data.info.num_classes == 100 and data.info.class_names == tuple(names) and data.info.hflip
    assert data.train_images.shape == (200, 3, 32, 32) and data.train_labels.tolist() == train_labels
    assert data.test_labels.tolist() == list(range(100))[::-1]
    one = Cifar100(root=str(tmp_path), max_per_class=1, test_per_class=1).load(tmp_path / "cache")
    assert one.train_labels.tolist() == list(range(100)) and one.train_images[:, 0, 0, 0].tolist() == list(range(100))


def test_imagenet50_reads_train_and_val_at_its_size_and_crops_resized(tmp_path):
    """Three classes of 40×30 images standing in for the 50: resized to ``size`` once, the
    labels in folder order, ``val/`` the test split, the ImageNet crop, a cache that serves
    the next load, and the statistics of the training split."""
    from kdbench_plugins.datasets.imagenet50 import ImageNet50

    root = tmp_path / "imagenet50"
    for split, count in (("train", 2), ("val", 1)):
        for label, wnid in enumerate(("n01440764", "n01443537", "n01484850")):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((30, 40, 3), 40 * label + 20, np.uint8)).save(folder / f"{wnid}_{i}.JPEG", quality=100)
    data = ImageNet50(root=str(root), size=48).load(tmp_path / "cache")
    assert data.train_images.shape == (6, 3, 48, 48) and data.test_images.shape == (3, 3, 48, 48)
    assert data.train_labels.tolist() == [0, 0, 1, 1, 2, 2] and data.test_labels.tolist() == [0, 1, 2]
    assert data.info.class_names == ("n01440764", "n01443537", "n01484850") and data.info.crop == "resized"
    assert data.info.hflip and data.info.size == 48
    levels = data.train_images.float().mean((1, 2, 3))
    assert levels.sub(torch.tensor([20.0, 20, 60, 60, 100, 100])).abs().max() <= 2  # JPEG rounding
    assert data.info.mean[0] == pytest.approx(levels.mean().item() / 255, abs=1e-4)
    for image in root.rglob("*.JPEG"):
        image.unlink()  # later loads read the cache only
    assert torch.equal(ImageNet50(root=str(root), size=48).load(tmp_path / "cache").train_images, data.train_images)
