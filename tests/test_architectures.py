"""Architectures: timm models with a small-image stem and the feature interface, and the small CNN."""
import pytest
import torch

from kdbench.data import DatasetInfo

CIFAR_LIKE = DatasetInfo("x", 10, 3, 32, (0.5,) * 3, (0.25,) * 3, tuple("abcdefghij"))


@pytest.mark.parametrize("name, final_size", [
    ("resnet18", 4), ("resnetv2_18", 4), ("wide_resnet50_2", 4), ("mobilenetv2_100", 2), ("vgg11", 1),
])
def test_timm_families_keep_resolution_on_32px_images(host, name, final_size):
    model = host.create("architecture", name)[1].network(CIFAR_LIKE).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model.run(x, {"intermediates"})
        assert model(x).shape == (2, 10) and out.logits.shape == (2, 10)
        assert out.features.shape[-1] == final_size and len(out.intermediates) >= 3
        assert torch.allclose(model.head(model.features(x)), model(x), atol=1e-4)
    classifier = model.classifier()  # a Linear, or a 1×1 conv in pre-activation ResNets
    assert getattr(classifier, "out_features", getattr(classifier, "out_channels", None)) == 10


def test_small_stem_can_be_switched_off(host):
    model = host.create("architecture", "timm:resnet18", {"small_stem": False})[1].network(CIFAR_LIKE).eval()
    with torch.no_grad():
        assert model.features(torch.rand(1, 3, 32, 32)).shape[-1] == 1


def test_small_cnn_exposes_the_feature_interface(host):
    info = DatasetInfo("g", 10, 1, 16, (0.3,), (0.4,), tuple("0123456789"))
    model = host.create("architecture", "small_cnn", {"width": 8})[1].network(info).eval()
    out = model.run(torch.rand(3, 1, 16, 16), {"intermediates"})
    assert [t.shape[1:] for t in out.intermediates] == [(8, 8, 8), (16, 4, 4), (32, 2, 2)]
    assert out.logits.shape == (3, 10)


def test_network_normalises_pixels_itself(host):
    info = DatasetInfo("g", 10, 1, 16, (0.3,), (0.4,), tuple("0123456789"))
    model = host.create("architecture", "small_cnn")[1].network(info)
    x = torch.full((1, 1, 16, 16), 0.7)
    assert torch.allclose(model.normalize(x), torch.ones_like(x))
