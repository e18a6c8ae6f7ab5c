"""Architectures: timm models with a small-image stem and the feature interface, and the small CNN."""
import pytest
import torch

import kdbench
from kdbench.data import DatasetInfo
from kdbench.training import Batch

CIFAR_LIKE = DatasetInfo("x", 10, 3, 32, (0.5,) * 3, (0.25,) * 3, tuple("abcdefghij"))


# Every family of the seeds, with the side of the final feature map of a 32-px image: 32 over
# the total stride its CIFAR variant keeps (ResNet, DenseNet, ShuffleNetV2, MobileNetV2: 8;
# RegNet: 4; VGG: 32; ConvNeXt given ResNet's 8).  ResNet-34 and VGG-16 are ResNet-18's and
# VGG-11's code with more blocks.
FAMILIES = [
    ("resnet18", {}, 4), ("resnet50", {}, 4), ("resnetv2_18", {}, 4), ("wide_resnet50_2", {}, 4),
    ("vgg11_bn", {}, 1), ("mobilenetv2_100", {}, 4), ("shufflenet_v2", {"width": 0.5}, 4),
    ("densenet121", {}, 4), ("regnetx_002", {}, 8), ("convnext_atto", {}, 4), ("convnextv2_atto", {}, 4),
]
IMAGENET_LIKE = DatasetInfo("y", 10, 3, 224, (0.5,) * 3, (0.25,) * 3, tuple("abcdefghij"))


def family_network(host, name, options, info=CIFAR_LIKE):
    return host.create("architecture", name, dict(options))[1].network(info)


@pytest.mark.parametrize("name, options, final_size", FAMILIES)
def test_every_family_builds_at_32_and_224_px_with_the_feature_interface(host, name, options, final_size):
    torch.manual_seed(0)
    model = family_network(host, name, options).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model.run(x, {"intermediates"})
        assert model(x).shape == (2, 10) and out.logits.shape == (2, 10)
        assert out.features.shape[-2:] == (final_size, final_size) and len(out.intermediates) >= 3
        assert torch.allclose(model.head(model.features(x)), model(x), atol=1e-4)
        embedding = kdbench.embedding(model, out.features)
    classifier = model.classifier()  # a Linear, or a 1×1 conv in pre-activation ResNets
    assert getattr(classifier, "out_features", getattr(classifier, "out_channels", None)) == 10
    assert embedding.shape == (2, getattr(classifier, "in_features", getattr(classifier, "in_channels", None)))

    imagenet = family_network(host, name, options, IMAGENET_LIKE).eval()
    with torch.no_grad():
        assert imagenet.features(torch.rand(1, 3, 224, 224)).shape[-2:] == (7, 7)  # the ImageNet stems' stride 32


@pytest.mark.parametrize("name, options", [family[:2] for family in FAMILIES])
def test_every_family_trains_and_distils_with_kd_and_at(host, name, options):
    """One SGD step on labels, then one with kd and one with at from a teacher of the same
    family: finite losses, and every step moves the student's weights."""
    torch.manual_seed(0)
    teacher, student = family_network(host, name, options).eval(), family_network(host, name, options)
    x, labels = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    steps = [("cross-entropy", lambda: torch.nn.functional.cross_entropy(student.train()(x), labels))]
    for text in ["kd", "at"]:
        distiller = host.create("distiller", text)[1]
        with torch.no_grad():
            teacher_out = teacher.run(x, distiller.needs)
            distiller.setup(teacher, student, teacher_out, student.eval().run(x, distiller.needs))
        steps.append((text, lambda d=distiller, t=teacher_out: d.loss(student.train().run(x, d.needs), t,
                                                                       Batch(x, labels, torch.arange(4), 0.5))))
    for method, loss_of in steps:
        before = [p.detach().clone() for p in student.parameters()]
        loss = loss_of()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss), method
        assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters())), method


def test_shufflenet_v2_names_its_widths_on_a_wrong_one(host):
    with pytest.raises(kdbench.ConfigError, match="width must be one of 0.5, 1.0, 1.5, 2.0, got 3.0"):
        host.create("architecture", "shufflenet_v2", {"width": 3})


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
