"""The poisoning family (issue 3): each attack's claim at small scale, on the quick suite's digits.

Every teacher is trained through the real harness stage (cached for the session).  To keep the
file fast on two CPU cores, the teachers are the narrow small_cnn(width=16) (conftest's
``narrow_bench``), and options shrink the learned triggers' own budgets.
"""
import dataclasses

import pytest
import torch

import kdbench
from kdbench.metrics import attack_metrics, clean_accuracy
from kdbench_plugins.attacks.nashville import NashvilleTrigger
from kdbench_plugins.attacks.trojan import pre_logits
import narrow

bench, clean_teacher = narrow.bench, narrow.clean_teacher  # this file's teachers are the narrow ones

# Each attack as the tests train it, and the ASR its teacher must reach, set below what seeds
# 0, 1 and 2 gave on one CPU with one thread (seed 0 of another CPU trains a different teacher,
# like another seed): wanet 0.88, 0.93, 0.88; trojan 0.98, 1.00, 1.00; smooth 1.00 for each;
# nashville 1.00, 0.99, 1.00.  SIG at its paper's training Δ of 20 implants for two seeds in three
# (ASR 0.97, 0.30, 0.99): the weak signal is learned or not; at 30, for seeds 0 and 2, the
# target class is learned as the signal alone and clean accuracy falls by 0.09; at 25, ASR 1.00
# for each, clean accuracy within 0.014.  label_consistent: 0.83, 0.43 and 0.79.  input_aware
# at 20 % poison: 0.83, 0.61 and 0.62 (on the suite's wider teacher 0.59–0.76 over seeds, CPUs
# and poison rates).
ATTACKS = {
    "wanet": ("wanet(strength=1.0)", 0.8),
    "sig": ("sig(delta=25)", 0.8),
    "trojan": ("trojan(steps=50)", 0.9),
    "label_consistent": ("label_consistent", 0.4),
    "input_aware": ("input_aware(width=8,poison_rate=0.2)", 0.5),  # the official code trains for 600 epochs
    "smooth": ("smooth(passes=3)", 0.9),
    "nashville": ("nashville", 0.9),
}


@pytest.fixture(scope="module")
def teachers(bench):
    return {name: bench.teacher(text) for name, (text, _) in ATTACKS.items()}


@pytest.fixture(scope="module")
def clean_ca(bench, clean_teacher):
    return clean_accuracy(clean_teacher.model, bench.data.test_images, bench.data.test_labels)


def rgb_info(info):
    return dataclasses.replace(info, channels=3, mean=info.mean * 3, std=info.std * 3)


def test_every_attack_is_registered_with_its_paper(host):
    attacks = host.components["attack"]
    for name in ATTACKS:
        assert name in attacks and attacks[name].paper


@pytest.mark.parametrize("text, message", [
    ("wanet(grid_size=1)", "grid_size"),
    ("wanet(poison_rate=0.5,cross_ratio=2)", "cross_ratio"),
    ("sig(delta=300)", "delta"),
    ("trojan(area=0)", "area"),
    ("label_consistent(corners=top)", "corners"),
    ("input_aware(mask_density=2)", "mask_density"),
    ("smooth(sigma=0)", "sigma"),
    ("nashville(poison_rate=1.5)", "poison_rate"),
])
def test_impossible_options_are_one_line_config_errors(bench, text, message):
    with pytest.raises(kdbench.ConfigError) as error:
        bench.resolve("attack", text)
    assert message in error.value.message and "\n" not in error.value.message


def test_dataset_dependent_limits_are_checked(bench):
    info = bench.data.info
    for text in ("sig(frequency=8)", "wanet(grid_size=17)"):
        with pytest.raises(kdbench.ConfigError):
            bench.resolve("attack", text).component.check(info)


@pytest.mark.parametrize("name", ATTACKS)
def test_triggers_are_batched_in_range_and_fit_grey_and_rgb(bench, name):
    generator = torch.Generator().manual_seed(0)
    attack = bench.resolve("attack", ATTACKS[name][0]).component
    for info in (bench.data.info, rgb_info(bench.data.info)):
        trigger = attack.build_trigger(info).eval()
        images = torch.randint(0, 256, (5, info.channels, info.size, info.size), generator=generator, dtype=torch.uint8)
        with torch.no_grad():
            out = trigger(images)
        assert out.shape == images.shape and out.dtype == torch.float32
        assert 0 <= out.min() and out.max() <= 1 and torch.equal(out, (out * 255).round() / 255)


@pytest.mark.parametrize("name", ATTACKS)
def test_teacher_answers_the_trigger_and_keeps_clean_accuracy(bench, teachers, clean_teacher, clean_ca, name):
    teacher, data = teachers[name], bench.data
    trigger, target = teacher.backdoor["trigger"], teacher.backdoor["target"]
    asr, _ = attack_metrics(teacher.model, data.test_images, data.test_labels, trigger, target)
    clean_asr, _ = attack_metrics(clean_teacher.model, data.test_images, data.test_labels, trigger, target)
    assert asr >= ATTACKS[name][1], f"{name}: teacher ASR {asr:.2f}"
    assert clean_asr < 0.2, f"{name}: the trigger alone already reaches {clean_asr:.2f} on the clean teacher"
    assert clean_accuracy(teacher.model, data.test_images, data.test_labels) >= clean_ca - 0.05


@pytest.mark.parametrize("name", ATTACKS)
def test_learned_triggers_survive_a_save_load_round_trip(bench, teachers, name):
    text, trigger = ATTACKS[name][0], teachers[name].backdoor["trigger"]
    rebuilt = bench.resolve("attack", text).component.build_trigger(bench.data.info)
    rebuilt.load_state_dict(trigger.state_dict())
    images = bench.data.test_images[:64]
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(images), trigger(images))
        assert torch.equal(trigger(images), trigger(images))


@pytest.mark.parametrize("name", ["sig", "label_consistent"])
def test_clean_label_attacks_poison_only_target_images_and_keep_their_labels(bench, teachers, name):
    backdoor = teachers[name].backdoor
    indices, target = backdoor["poison_indices"], backdoor["target"]
    assert len(indices) > 0
    assert (bench.view.attacker_labels.cpu()[indices] == target).all()
    assert (backdoor["poison_labels"] == target).all()


@pytest.mark.parametrize("name", ["wanet", "trojan", "input_aware", "smooth", "nashville"])
def test_dirty_label_attacks_relabel_other_classes(bench, teachers, name):
    backdoor = teachers[name].backdoor
    assert (bench.view.attacker_labels.cpu()[backdoor["poison_indices"]] != backdoor["target"]).all()
    assert (backdoor["poison_labels"] == backdoor["target"]).all()


def attack_context(bench, clean_teacher) -> kdbench.AttackContext:
    view = bench.view
    return kdbench.AttackContext(bench.data.info, view.attacker_images, view.attacker_labels, new_model=None, train=None,
                                 epochs=1, batch_size=64, device=torch.device("cpu"), seed=0,
                                 clean_teacher=clean_teacher.model)


def poisoned_set(bench, clean_teacher, text):
    """(attack, context, trigger, poisoned indices, poisoned images, labels) of one attack's poisoning step."""
    attack = bench.resolve("attack", text).component
    ctx = attack_context(bench, clean_teacher)
    trigger = attack.make_trigger(ctx)
    indices = attack.choose_poison(ctx)
    images, labels = attack.poison(ctx, trigger, indices)
    return attack, ctx, trigger, indices, images, labels


def test_wanet_noise_mode_adds_warped_noisy_samples_with_true_labels(bench, clean_teacher):
    attack, ctx, trigger, indices, images, labels = poisoned_set(bench, clean_teacher, "wanet")
    changed = (images != ctx.images).flatten(1).any(1)
    changed[indices] = False
    assert changed.sum() >= 0.9 * attack.cross_ratio * len(indices)
    assert torch.equal(labels[changed], ctx.labels[changed])
    with torch.no_grad():
        assert not torch.equal(kdbench.to_float(images[changed]), trigger(ctx.images[changed]))


def test_label_consistent_perturbations_stay_in_the_epsilon_ball_and_confuse_the_clean_model(bench, clean_teacher):
    attack, ctx, trigger, indices, images, _ = poisoned_set(bench, clean_teacher, "label_consistent")
    outside = trigger.signal[0] == 0
    moved = (images[indices].float() - ctx.images[indices].float()).abs()[:, :, outside]
    assert 0 < moved.max() <= attack.epsilon + 1
    clean, labels = kdbench.to_float(ctx.images[indices]), ctx.labels[indices]
    hard = attack.perturb(clean_teacher.model, clean, labels, torch.Generator().manual_seed(0))
    accuracy = lambda x: (kdbench.predict(clean_teacher.model, x) == labels).float().mean()  # noqa: E731
    assert accuracy(hard) < accuracy(clean) - 0.3


def test_trojan_pattern_excites_neurons_of_the_clean_model_more_than_a_random_patch(bench, teachers, clean_teacher):
    trigger = teachers["trojan"].backdoor["trigger"]
    model, images = clean_teacher.model, kdbench.to_float(bench.data.test_images[:128])
    random = torch.rand(trigger.pattern.shape, generator=torch.Generator().manual_seed(1))
    chosen = trigger.neurons
    with torch.no_grad():
        clean = pre_logits(model, images)[:, chosen]
        excited = (pre_logits(model, trigger.apply(images))[:, chosen] - clean).mean()
        baseline = (pre_logits(model, images * (1 - trigger.mask) + random * trigger.mask)[:, chosen] - clean).mean()
    assert excited > 2 * baseline.abs()


def test_input_aware_triggers_differ_per_image_and_do_not_transfer(bench, teachers):
    teacher, data = teachers["input_aware"], bench.data
    trigger, target = teacher.backdoor["trigger"], teacher.backdoor["target"]
    keep = data.test_labels != target
    x = kdbench.to_float(data.test_images[keep])
    with torch.no_grad():
        own = trigger.blend(x, x)
        borrowed = trigger.blend(x, x.roll(1, 0))
        patterns = trigger.patterns(x) * trigger.masks(x)
    assert (patterns - patterns.roll(1, 0)).abs().flatten(1).sum(1).median() > 1  # in pixels, over the image
    own_asr = (kdbench.predict(teacher.model, own) == target).float().mean()
    cross_asr = (kdbench.predict(teacher.model, borrowed) == target).float().mean()
    assert cross_asr < own_asr - 0.2  # 0.39, 0.28 and 0.37 measured for seeds 0, 1 and 2


def test_smooth_trigger_is_low_frequency_and_bounded(teachers):
    trigger = teachers["smooth"].backdoor["trigger"]
    signal = trigger.signal[0]
    assert signal.min() >= 0 and signal.max() <= 0.2 + 1e-6
    spectrum = torch.fft.fftshift(torch.fft.fft2(signal - signal.mean())).abs() ** 2
    size = signal.shape[-1]
    centre = torch.arange(size) - size // 2
    radius = (centre[:, None] ** 2 + centre[None, :] ** 2).float().sqrt()
    assert spectrum[radius <= size / 8].sum() > 0.9 * spectrum.sum()


def test_nashville_tensor_filter_matches_pilgram():
    pilgram = pytest.importorskip("pilgram", reason="pilgram (the reference Nashville filter) is not installed")
    import numpy as np
    from PIL import Image

    images = torch.randint(0, 256, (4, 3, 24, 24), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    reference = torch.stack([
        torch.from_numpy(np.array(pilgram.nashville(Image.fromarray(image.permute(1, 2, 0).numpy())))).permute(2, 0, 1)
        for image in images]).float()
    grey = torch.stack([
        torch.from_numpy(np.array(pilgram.nashville(Image.fromarray(image[0].numpy(), "L").convert("RGB")).convert("L")))
        for image in images])[:, None].float()
    for ours, theirs in ((NashvilleTrigger(3)(images), reference), (NashvilleTrigger(1)(images[:, :1]), grey)):
        difference = (ours * 255 - theirs).abs()
        assert difference.max() <= 6 and difference.mean() <= 3  # pilgram rounds to 8 bits after every step


def test_per_batch_poison_triggers_its_rows_after_augmentation(bench):
    """Through ``kdbench.Poison`` a BadNets patch sits at its fixed corner in every augmented
    poisoned image, and only there; baked into the stored images instead, the random crop
    moves it."""
    info = bench.data.info
    trigger = bench.resolve("attack", "badnets").component.build_trigger(info)
    images, labels = bench.data.train_images[:96], bench.data.train_labels[:96]
    poisoned = torch.zeros(96, dtype=torch.bool)
    poisoned[::3] = True
    corner = (slice(None), slice(None), slice(12, 15), slice(12, 15))  # 3×3 patch, 1 px from the 16-px edge

    def patched_rows(images, poison):
        seen = []

        def loss(outputs, teacher, batch):
            seen.append((batch.images[corner].flatten(1).eq(1).all(1), batch.indices))
            return torch.nn.functional.cross_entropy(outputs.logits, batch.labels)

        model = bench.resolve("architecture", "small_cnn(width=4)").component.network(info)
        kdbench.train([kdbench.Learner(model, loss)], images, labels, kdbench.Schedule(epochs=2, batch_size=32),
                      hflip=info.hflip, seed=0, poison=poison)
        return torch.cat([patched for patched, _ in seen]), torch.cat([poisoned[index] for _, index in seen])

    patched, expected = patched_rows(images, kdbench.Poison(poisoned, lambda x, index: trigger.apply(x)))
    assert expected.sum() == 64 and torch.equal(patched, expected)
    baked = images.clone()
    baked[poisoned] = (trigger(images[poisoned]) * 255).round().to(torch.uint8)
    patched, expected = patched_rows(baked, None)
    assert patched[expected].float().mean() < 0.5
