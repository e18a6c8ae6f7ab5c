"""DFST (Cheng et al., AAAI 2021): its CycleGAN parts, the style domains, detoxification, and its claim on digits."""
import copy
import dataclasses

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from kornia.metrics import ssim
from PIL import Image

import kdbench
from kdbench.cli import main
from kdbench.metrics import attack_metrics, clean_accuracy
from kdbench_plugins.attacks.dfst import (DFST, Detoxification, FeatureInjector, StyleGenerator, patch_discriminator,
                                          style_folder_images, sunrise_domain)
import narrow

bench, clean_teacher = narrow.bench, narrow.clean_teacher  # this file's teachers are the narrow ones

# CPU-sized: networks a quarter as wide as the official ones, the GAN trained for a fifth of
# the suite's 30 epochs (the reference: ten times the teacher's).
DFST_SPEC = "dfst(gan_width=8,gan_epochs=0.2)"


@pytest.mark.parametrize("channels, size, patches", [(1, 16, 5), (3, 32, 7)])
def test_the_generator_keeps_the_image_shape_and_the_patchgan_judges_7x7_patches_of_32_px(channels, size, patches):
    x = torch.randn(2, channels, size, size)
    out = StyleGenerator(channels, width=8)(x)
    assert out.shape == x.shape and out.abs().max() <= 1
    assert patch_discriminator(channels, width=8)(x).shape == (2, 1, patches, patches)  # the official 7×7 at 32 px


def test_the_feature_injector_starts_as_the_identity_and_mixes_its_window_terms():
    x = torch.rand(2, 3, 12, 12)
    injector = FeatureInjector(3)
    assert torch.allclose(injector(x), x)
    with torch.no_grad():
        injector.delta.zero_()
        injector.delta[3:6] = torch.eye(3)  # the window maximum alone
    bright = torch.zeros(1, 3, 12, 12)
    bright[..., 0, 0] = 0.8
    out = injector(bright)
    assert torch.allclose(out[..., :6, :6], torch.full((1, 3, 6, 6), 0.8))  # within 5 px of the corner: its value
    assert out[..., 6:, :].abs().max() == 0 and out[..., :, 6:].abs().max() == 0


def test_sunrise_scenes_grade_from_a_dark_sky_to_a_bright_horizon_over_dark_ground(bench):
    info = bench.data.info
    scenes = sunrise_domain(50, info, torch.Generator().manual_seed(0))
    assert scenes.dtype == torch.uint8 and scenes.shape == (50, 1, info.size, info.size)
    rows = scenes.float().mean((0, 1, 3))
    horizon = int(rows.argmax())
    assert rows[0] < rows[horizon] - 60 and rows[-1] < rows[horizon] - 60
    rgb = sunrise_domain(50, dataclasses.replace(info, channels=3, size=32), torch.Generator().manual_seed(0))
    assert rgb.shape == (50, 3, 32, 32)
    sky = rgb[:, :, :8].float().mean((0, 2, 3))
    assert sky[2] > sky[0]  # the upper sky is blue rather than red


def test_a_style_folder_is_read_at_the_datasets_size_and_a_missing_one_is_refused(bench, tmp_path):
    for i, colour in enumerate([(255, 128, 0), (0, 0, 255)]):
        Image.new("RGB", (40, 30), colour).save(tmp_path / f"{i}.png")
    images = style_folder_images(tmp_path, bench.data.info)
    grey = np.round(np.array([255 * 0.299 + 128 * 0.587, 255 * 0.114]))
    assert images.shape == (2, 1, 16, 16) and np.allclose(images[:, 0, 0, 0].numpy(), grey, atol=1)
    result = CliRunner().invoke(main, ["run", "quick", "--attacks", f"dfst(style_folder={tmp_path / 'none'})",
                                       "--workdir", str(tmp_path / "work")])
    assert result.exit_code == 2 and "dfst: the style folder" in result.output and "Traceback" not in result.output
    with pytest.raises(kdbench.ConfigError, match="multiple of 4"):
        DFST().check(dataclasses.replace(bench.data.info, size=18))


class BrightnessNetwork(torch.nn.Module):
    """Four feature channels: the image's brightness in channel 2, nothing elsewhere; logits from their means."""

    def features(self, x):
        return torch.cat([torch.zeros_like(x), torch.zeros_like(x), x, torch.zeros_like(x)], 1)

    def run(self, x, needs):
        features = self.features(x)
        return kdbench.Outputs(torch.nn.functional.pad(features.mean((2, 3)), (0, 6)), features)


def detoxification(model, objective: str, clean: torch.Tensor, triggered: torch.Tensor, **options) -> Detoxification:
    """A detoxification of ``model`` by a default DFST with ``options``, on a training set of 200
    whose first 100 samples are poisoned, for 3 epochs."""
    attack = DFST(injector_objective=objective, **options)
    generator = torch.Generator().manual_seed(0)
    return Detoxification(attack, model, clean, triggered, torch.arange(100, 200), 200, 3, generator)


def test_the_compromised_neuron_is_the_one_triggered_images_excite_most_and_detoxicant_rows_avoid_the_poisons():
    clean = torch.rand(20, 1, 16, 16) * 0.5
    detox = detoxification(BrightnessNetwork(), "paper", clean, clean + 0.3, neuron_ratio=0.25)
    assert detox.compromised_neurons().tolist() == [2]
    detox.redraw()
    chosen = detox.mask.nonzero().flatten()
    assert len(chosen) == 10 and chosen.min() >= 100  # 5 % of 200, all from the unpoisoned candidates


def test_training_blends_only_the_detoxicant_rows_and_only_after_a_round(bench, clean_teacher):
    """The teacher's training, seen through a stand-in for the harness's loop that starts from
    the clean teacher and trains nothing: before the first round the detoxicant rows are left as
    they are; after it, they and no others change by more than rounding; the poisons carry the
    target, every other sample its own label."""
    data, seen = bench.data, {}
    images, labels = data.train_images[:200], data.train_labels[:200]

    def train(model, train_images, train_labels, poison=None, after_epoch=None, **_):
        x, index = kdbench.to_float(train_images), torch.arange(len(train_images))
        seen.update(x=x, before=poison(x, index), labels=train_labels)
        after_epoch(0)
        seen.update(after=poison(x, index), mask=poison.mask.clone())
        return model

    ctx = kdbench.AttackContext(data.info, images, labels, lambda: copy.deepcopy(clean_teacher.model), train,
                                epochs=3, batch_size=64, device=torch.device("cpu"), seed=0)
    backdoor = DFST(gan_width=4, gan_epochs=0.34).run(ctx)
    x, mask, poisons = seen["x"], seen["mask"], backdoor.poison_indices
    assert torch.equal(seen["before"], x)
    assert int(mask.sum()) == 10 and not mask[poisons].any()
    assert torch.equal(seen["after"][~mask], x[~mask]) and (seen["after"][mask] - x[mask]).abs().amax() > 1e-3
    assert (seen["labels"][poisons] == 0).all() and len(poisons) == 10
    others = torch.ones(200, dtype=torch.bool)
    others[poisons] = False
    assert torch.equal(seen["labels"][others], labels[others])


def test_the_official_injector_ignores_the_model_and_the_papers_learns_its_objective_from_it(
        bench, clean_teacher):
    """The official code's injector learns from its SSIM term alone (the model's outputs under
    no_grad): the same whatever the model, it drives the images away from their originals.
    The paper's lets the model's gradients through: it differs with the model, and it lowers
    the paper's objective, CE(target) − 0.1·SSIM − 0.3·excitation of the compromised neuron,
    below where the official one leaves it (measured, the default settings on 64 training
    images, the narrow teachers of seeds 0, 1 and 2, one thread: official SSIM 0.834; objective
    12.23, 13.90 and 12.76 for the images as they are, 8.81, 10.38 and 9.43 after the official
    injector, 8.55, 9.45 and 7.36 after the paper's).  The excitation itself, not asserted,
    rose from 0.59 to 1.17 and from 0.49 to 0.64 for seeds 0 and 1 (on the suite's wider
    teacher it did not reliably)."""
    clean = kdbench.to_float(bench.data.train_images[:64])
    dfst_teacher = bench.teacher(DFST_SPEC)
    triggered = kdbench.to_float(dfst_teacher.backdoor["trigger"](bench.data.train_images[:64]))

    def trained(model, objective):
        detox = detoxification(model.eval(), objective, clean, triggered)
        neurons = detox.compromised_neurons()
        return neurons, detox.train_injector(neurons)

    official = [trained(model, "official")[1] for model in (clean_teacher.model, dfst_teacher.model)]
    assert torch.equal(official[0].delta, official[1].delta)
    papers = [trained(model, "paper") for model in (clean_teacher.model, dfst_teacher.model)]
    assert not torch.equal(papers[0][1].delta, papers[1][1].delta)
    neurons, injector = papers[1]

    def objective(x):
        features = dfst_teacher.model.features(x)
        logits = dfst_teacher.model.head(features)
        target = torch.full((len(x),), dfst_teacher.backdoor["target"])
        return (torch.nn.functional.cross_entropy(logits, target) - 0.1 * ssim(x, clean, 5).mean()
                - 0.3 * features[:, neurons].mean())

    with torch.no_grad():
        assert ssim(0.4 * clean + 0.6 * official[0](clean), clean, 5).mean() < 0.9
        assert (objective(0.4 * clean + 0.6 * injector(clean)) < objective(0.4 * clean + 0.6 * official[1](clean))
                < objective(clean))


def test_dfst_teacher_answers_the_learned_style_and_keeps_clean_accuracy(bench, clean_teacher):
    """The paper's claim at small scale: the blended style transfer changes each image in its own
    way, and the teacher trained on 5 % stylised images under detoxification answers it while
    keeping its clean accuracy; the clean teacher does not (measured on the narrow teachers
    of seeds 0, 1 and 2: residuals 0.73, 0.65 and 0.67 their own, ASR 1.000 on each against the
    clean teachers' 0.011, 0.000 and 0.000, CA 0.993, 0.987 and 0.995 against 0.990, 0.992
    and 0.990)."""
    teacher = bench.teacher(DFST_SPEC)
    trigger, target = teacher.backdoor["trigger"], teacher.backdoor["target"]
    images = kdbench.to_float(bench.data.test_images)
    with torch.no_grad():
        residuals = kdbench.to_float(trigger(bench.data.test_images)) - images
    assert (residuals - residuals.mean(0, keepdim=True)).abs().mean() > 0.3 * residuals.abs().mean()

    def asr(model):
        return attack_metrics(model, bench.data.test_images, bench.data.test_labels, trigger, target)[0]

    assert asr(teacher.model) > 0.8 and asr(clean_teacher.model) < 0.05
    clean_ca = clean_accuracy(clean_teacher.model, bench.data.test_images, bench.data.test_labels)
    assert clean_accuracy(teacher.model, bench.data.test_images, bench.data.test_labels) > clean_ca - 0.03
