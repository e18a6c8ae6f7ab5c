"""The training loop's contract with the stages around it."""
import pytest
import torch
import torch.nn.functional as F

import kdbench
from kdbench.training import cross_entropy
from kdbench_plugins.architectures.small_cnn import SmallCNN

INFO = kdbench.DatasetInfo("noise", 4, 3, 8, (0.5,) * 3, (0.25,) * 3, tuple("abcd"))


def gradients(model, x, y):
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return [p.grad.clone() for p in model.parameters()]


def test_a_trained_model_computes_exactly_as_the_same_model_loaded_from_the_store():
    """The loop trains channels_last; what a later stage does with its model (an attack
    fine-tuning a clean teacher) must not depend on whether that model was just trained or
    loaded from the work directory, so both give bit-identical gradients on a 3-channel batch."""
    torch.manual_seed(0)
    trained = kdbench.Network(SmallCNN(4, 3, 8), INFO)
    images, labels = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8), torch.randint(0, 4, (64,))
    kdbench.train([kdbench.Learner(trained, cross_entropy)], images, labels, kdbench.Schedule(1, 16), hflip=True, seed=0)
    loaded = kdbench.Network(SmallCNN(4, 3, 8), INFO)
    loaded.load_state_dict(trained.state_dict())
    x = torch.rand(16, 3, 8, 8)
    for model in (trained, loaded):
        model.train()
    for a, b in zip(gradients(trained, x, labels[:16]), gradients(loaded, x, labels[:16])):
        assert torch.equal(a, b)


def test_inference_runs_channels_last_and_hands_the_model_back_in_the_default_format():
    """``kdbench.logits`` runs the model channels_last, as the loop trains it, and restores its
    format even when interrupted: a model in the default format is so again after, so the
    contract above holds after inference too, and one in the loop's format stays in it; the
    logits are the default format's up to rounding."""
    torch.manual_seed(0)
    model = kdbench.Network(SmallCNN(4, 3, 8), INFO).eval()
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        expected = model(kdbench.to_float(images))
    assert torch.allclose(kdbench.logits(model, images, batch_size=16), expected, rtol=1e-5, atol=1e-5)
    assert all(p.is_contiguous() for p in model.parameters())
    conv = model.body.stages[0][0].weight

    def interrupted(x):
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        kdbench.logits(model, images, transform=interrupted)
    assert conv.is_contiguous()
    model.to(memory_format=torch.channels_last)  # as in the loop's hands: left so
    kdbench.logits(model, images)
    assert not conv.is_contiguous()
