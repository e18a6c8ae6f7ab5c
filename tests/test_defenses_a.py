"""Group A detectors on a case built to be separable: the quick suite's BadNets teacher on
digits (a white 3×3 patch, 10% of the attacker half relabelled to class 0).

Every bar starts from the paper's claim and states why it sits where it does; option values
are cut (steps, epochs, images) so the file runs in about two minutes on two CPU cores.
"""
import math

import numpy as np
import pytest
import torch

import kdbench
from kdbench.metrics import detection_metrics
from kdbench_plugins.defenses import abl_loss as abl_module
from kdbench_plugins.defenses.activation_clustering import ActivationClustering
from kdbench_plugins.defenses.scale_up import ScaleUp
from kdbench_plugins.defenses.spectral_signatures import SpectralSignatures

INPUTS = 128  # clean test images, and as many triggered non-target ones


@pytest.fixture(scope="module")
def inputs(bench, badnets_teacher):
    """INPUTS clean test images then INPUTS triggered non-target ones, and the positive mask."""
    backdoor = badnets_teacher.backdoor
    images, labels = bench.data.test_images, bench.data.test_labels
    with torch.no_grad():
        triggered = backdoor["trigger"](images[labels != backdoor["target"]][:INPUTS])
    return torch.cat([kdbench.to_float(images[:INPUTS]), triggered]), torch.arange(2 * INPUTS) >= INPUTS


@pytest.fixture(scope="module")
def training_set(bench, badnets_teacher):
    return bench.view.poisoned_training_set(badnets_teacher.backdoor)


def detector(bench, text):
    return bench.resolve("defense", text).component


def input_auroc(bench, teacher, inputs, text):
    images, positive = inputs
    return detection_metrics(detector(bench, text).score(teacher.model, images, bench.view.defender_data()), positive)[0]


def training_auroc(bench, teacher, images, labels, positive, text):
    scores = detector(bench, text).score(teacher.model, images, labels, bench.view.defender_data())
    return detection_metrics(scores, positive)[0]


@pytest.mark.parametrize("output, bar", [("logits", 0.8), ("features", 0.8)])
def test_cognitive_distillation_finds_triggered_inputs(bench, badnets_teacher, inputs, output, bar):
    """Huang et al. report AUROC close to 1 for BadNets on CIFAR-10.  Here 30 steps instead of
    100, and digits are strokes on a black background that the random colour would
    overwrite, so clean and triggered masks alike keep much of the image.  CD-F with its
    own settings (α = 0.001, β = 10, learning rate 0.05) separates a little less on digits
    than with CD-L's: 0.85 on two teachers (trained with 1 and 2 threads) against 0.87 and
    0.88, and no better with more steps (0.81 and 0.83 at 100)."""
    text = f"cognitive_distillation(output={output},steps=30)"
    assert input_auroc(bench, badnets_teacher, inputs, text) >= bar


class Constant(torch.nn.Module):
    """A model whose logits and feature map ignore the image."""

    def forward(self, x):
        return torch.zeros(len(x), 10)

    def features(self, x):
        return torch.zeros(len(x), 4, 2, 2)


@pytest.mark.parametrize("text, settings", [("cognitive_distillation", (0.1, 0.01, 1.0)),
                                            ("cognitive_distillation(output=features)", (0.05, 0.001, 10.0)),
                                            ("cognitive_distillation_data(output=features,lr=0.2)", (0.2, 0.001, 10.0))])
def test_cognitive_distillation_takes_the_official_settings_of_its_output(bench, text, settings):
    """CD's runs: CD-L lr 0.1, α = 0.01, β = 1; CD-F lr 0.05, α = 0.001, β = 10.  Against a
    model that ignores its input only α‖m‖₁ pulls, uniformly, and Adam's first step moves
    every θ = 1 by −lr: one step leaves ‖m‖₁ = H·W·(tanh(1 − lr) + 1)/2."""
    cd = detector(bench, text.replace(")", ",steps=1)") if "(" in text else text + "(steps=1)")
    assert cd.settings() == pytest.approx(settings)
    norms = cd.mask_norms(Constant(), torch.rand(3, 1, 4, 4))
    assert norms.tolist() == pytest.approx([16 * (math.tanh(1 - settings[0]) + 1) / 2] * 3, rel=1e-5)


def test_cognitive_distillation_finds_poisoned_training_samples(bench, badnets_teacher, training_set):
    """The paper's main use, on the poisoned training set, with CD-F.  The first 200 samples
    hold 27 poisoned ones.  With CD-F's own settings, 0.77 and 0.82 on two teachers at 30
    steps (0.72 and 0.80 at 100; 0.82 and 0.85 with CD-L's settings); bar 0.7."""
    images, labels, positive = (part[:200] for part in training_set)
    text = "cognitive_distillation_data(output=features,steps=30)"
    assert training_auroc(bench, badnets_teacher, images, labels, positive, text) >= 0.7


def test_scale_up_finds_triggered_inputs(bench, badnets_teacher, inputs):
    """Guo et al. report AUROC ≥ 0.95 for BadNets; bar 0.85, at the default (one mean and
    standard deviation over the defender's correctly classified images, as BackdoorBox's
    SCALE_UP): a monotone map of the data-free SPC, so the same ranking."""
    assert input_auroc(bench, badnets_teacher, inputs, "scale_up") >= 0.85


class Brightness(torch.nn.Module):
    """A toy classifier: class ⌊10 × mean pixel⌋ (at most 9)."""

    def forward(self, x):
        return torch.nn.functional.one_hot((x.mean((1, 2, 3)) * 10).floor().clamp(max=9).long(), 10).float()


def grey(*levels):
    return torch.tensor(levels).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()


def test_scale_up_standardises_like_backdoorbox():
    """Amplified by 3, 5, 7, 9, 11, a grey level v stays in class 0 while 11·v < 0.1: SPC 1 for
    v = 0, 4/5 for 0.0095, 2/5 for 0.015, 1/5 for 0.025.  The defender's image of level 0.95
    is labelled 3 but predicted 9: it is left out of the statistics.  BackdoorBox's
    init_spc_norm: one mean and torch.std over the clean images."""
    calibration = kdbench.DefenderData(grey(0.0, 0.0095, 0.015, 0.025, 0.95), torch.tensor([0, 0, 0, 0, 3]), 10)
    clean = [1.0, 0.8, 0.4, 0.2]
    mean = sum(clean) / 4
    std = math.sqrt(sum((v - mean) ** 2 for v in clean) / 3)
    inputs = grey(0.0095, 0.025, 0.0)
    scores = ScaleUp(max_scale=11).score(Brightness(), inputs, calibration)
    assert scores.tolist() == pytest.approx([(0.8 - mean) / std, (0.2 - mean) / std, (1 - mean) / std], rel=1e-5)
    data_free = ScaleUp(calibration="none").score(Brightness(), inputs, calibration)
    assert data_free.tolist() == pytest.approx([0.8, 0.2, 1.0])


def test_scale_up_per_class_option(bench, badnets_teacher):
    """The paper's data-limited option: the defender's correctly classified images, scored
    per class, have mean zero in each predicted class."""
    calibration = bench.view.defender_data()
    scale_up = detector(bench, "scale_up(calibration=per_class)")
    scores = scale_up.score(badnets_teacher.model, calibration.images, calibration)
    predicted = kdbench.predict(badnets_teacher.model, calibration.images)
    correct = predicted == calibration.labels
    for label in predicted[correct].unique():
        assert scores[correct & (predicted == label)].mean().abs() < 1e-5


def test_activation_clustering_finds_poisoned_training_samples(bench, badnets_teacher, training_set):
    """Chen et al. detect MNIST poison almost perfectly, the poison being the smaller of the
    two clusters of its label.  The quick suite's target label is half poisoned (60 clean,
    60 poisoned), so, as for spectral signatures, the detector sees 12 of the poisoned
    samples (ε ≈ 17%).  And ICA whitens: each of its 10 components has unit variance, so the
    one direction that separates the poison weighs no more than the nine others, which a
    label of about 60 samples leaves to chance; the split then hangs on ICA's random start
    (AUROC 0.24 to 0.96 over six ICA seeds on one teacher, 0.41 to 0.95 on a teacher
    trained with two threads instead of one), while 3 components give 1.00 for every seed
    on both; bar 0.85."""
    images, labels, positive = training_set
    keep = ~positive | (positive.cumsum(0) <= 12)
    on_device = keep.to(images.device)
    auroc = training_auroc(bench, badnets_teacher, images[on_device], labels[on_device], positive[keep],
                           "activation_clustering(dims=3)")
    assert auroc >= 0.85


def two_labels(seed=0):
    """Activations of two labels in 12 dimensions: label 0 holds a tight shifted group of 40
    among 200 samples, label 1 is one cloud of 150."""
    rng = np.random.default_rng(seed)
    label0 = rng.normal(size=(200, 12))
    label0[:40] = rng.normal(size=(40, 12)) * 0.3 + 4.0
    return np.concatenate([label0, rng.normal(size=(150, 12))]), np.array([0] * 200 + [1] * 150)


def test_activation_clustering_scores_as_the_paper_and_as_cd():
    """silhouette_size: the label's silhouette score times one minus the sample's cluster
    share; CD's analysis/activation_clustering.py: 2-means on the raw activations and
    sklearn's silhouette_samples of each sample.  ICA's three components split off the
    shifted group (with ten unit-variance components, the one direction that separates it
    weighs no more than nine of noise, and 2-means splits the noise)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import roc_auc_score, silhouette_samples, silhouette_score

    activations, labels = two_labels()
    paper = np.zeros(350)
    cd = np.zeros(350)
    for label in (0, 1):
        own = activations[labels == label]
        reduced = PCA(n_components=10, random_state=0).fit_transform(own)
        clusters = KMeans(n_clusters=2, n_init=10, random_state=0).fit_predict(reduced)
        share = np.bincount(clusters)[clusters] / len(own)
        paper[labels == label] = max(silhouette_score(reduced, clusters), 0) * (1 - share)
        raw = KMeans(n_clusters=2, n_init=10, random_state=0).fit_predict(own)
        cd[labels == label] = silhouette_samples(own, raw)
    pca = ActivationClustering(reduction="pca").scores(activations, labels)
    assert pca == pytest.approx(paper, abs=1e-9)
    sample = ActivationClustering(reduction="none", score_form="sample_silhouette").scores(activations, labels)
    assert sample == pytest.approx(cd, abs=1e-9)
    shifted = np.arange(350) < 40
    assert roc_auc_score(shifted, ActivationClustering(dims=3).scores(activations, labels)) == 1.0


def test_spectral_signatures_finds_poisoned_training_samples(bench, badnets_teacher, training_set):
    """Tran et al.'s guarantee needs the poison to be a minority ε of its label (they test
    5–10%); the quick suite's teacher relabels 10% of the whole set, half of the target
    label, where clean and poisoned samples project equally far from the label's mean.  So
    the detector sees the teacher's training set with 12 of its 60 poisoned samples
    (ε ≈ 17%), and the bar, from the paper's near-complete removal, is 0.85.  On the whole
    set (ε = 50%) the default still ranks the poisoned samples first among the other labels'
    (0.84 and 0.85 on two teachers trained with 2 and 1 threads); bar 0.8."""
    images, labels, positive = training_set
    keep = ~positive | (positive.cumsum(0) <= 12)
    on_device = keep.to(images.device)
    auroc = training_auroc(bench, badnets_teacher, images[on_device], labels[on_device], positive[keep], "spectral_signatures")
    assert auroc >= 0.85
    assert training_auroc(bench, badnets_teacher, images, labels, positive, "spectral_signatures") >= 0.8


def test_spectral_signatures_scores_as_the_official_code():
    """MadryLab's compute_corr.py: v the top right singular vector of the centred
    activations, score |v·R| on the uncentred ones; the paper's ((R − mean)·v)²; pyod's MAD
    (CD's normalisation) 0.6745·|s − median|/median|s − median| over every sample; per
    label, the signed modified z-score.  numpy on two labels of a few activations."""
    rows = np.array([[1.0, 0.0, 0.0], [2.0, 1.0, 0.0], [3.0, 0.0, 1.0], [10.0, 2.0, 2.0],
                     [0.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 1.0, 3.0]])
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    projection, squared = np.zeros(7), np.zeros(7)
    for label in (0, 1):
        own = rows[labels == label]
        centred = own - own.mean(0)
        top = np.linalg.svd(centred, full_matrices=False)[2][0]
        projection[labels == label] = np.abs(own @ top)
        squared[labels == label] = (centred @ top) ** 2

    def modified_z(x):
        return 0.6745 * (x - np.median(x)) / np.median(np.abs(x - np.median(x)))

    per_class = np.concatenate([modified_z(projection[:4]), modified_z(projection[4:])])
    expected = {("projection", "none"): projection, ("centred_squared", "none"): squared,
                ("projection", "global_mad"): np.abs(modified_z(projection)),
                ("projection", "per_class_mad"): per_class}
    for (form, normalise), values in expected.items():
        detector = SpectralSignatures(score_form=form, normalise=normalise)
        scores = detector.scores(torch.tensor(rows), torch.tensor(labels))
        assert scores.numpy() == pytest.approx(values, rel=1e-9), (form, normalise)


def test_abl_loss_finds_poisoned_training_samples(bench, badnets_teacher, training_set):
    """Li et al. isolate BadNets samples among the lowest-loss 1% with precision near 1, at
    their 20 isolation epochs.  On the 601 samples here one isolation run in several misses
    (AUROC 1.0, 0.57 and 0.98 for seeds 0 to 2, 0.97 for seed 3), so the bar is on the
    median of three seeds."""
    aurocs = [training_auroc(bench, badnets_teacher, *training_set, f"abl_loss(seed={seed})") for seed in range(3)]
    assert sorted(aurocs)[1] >= 0.9, aurocs


def test_abl_loss_cd_variant_finds_poisoned_training_samples(bench, badnets_teacher, training_set):
    """Cognitive Distillation's reading of the signal (cross-entropy, losses averaged over
    the epochs) is steadier: one run suffices.  At 5 epochs, on the BadNets teachers of seeds
    0, 1 and 2: 0.94, 0.83 and 0.89 (0.89 for seed 0 trained and inspected with one thread;
    0.96 on another CPU)."""
    text = "abl_loss(loss=cross_entropy,average_epochs=true,epochs=5)"
    assert training_auroc(bench, badnets_teacher, *training_set, text) >= 0.8


def test_abl_loss_cd_variant_averages_the_epochs(bench, monkeypatch):
    """CD's analysis/abl.py: minus the per-sample cross-entropy averaged over the ends of the
    epochs of ordinary training; each measurement in eval mode, training going on after it."""
    measured = []
    original = abl_module._sample_losses

    def spy(model, images, labels):
        measured.append(original(model, images, labels))
        return measured[-1]

    monkeypatch.setattr(abl_module, "_sample_losses", spy)
    torch.manual_seed(0)
    model = bench.resolve("architecture", "small_cnn(width=4)").component.network(bench.data.info)
    images, labels = bench.view.attacker_images[:32], bench.view.attacker_labels[:32]
    text = "abl_loss(loss=cross_entropy,average_epochs=true,epochs=2,batch_size=16)"
    scores = detector(bench, text).score(model, images, labels, None)
    assert len(measured) == 2
    assert torch.allclose(scores, -(measured[0] + measured[1]) / 2)
    assert not torch.allclose(measured[0], measured[1])


def test_neural_cleanse_scores_the_smallest_norm_by_its_median_absolute_deviation(bench, monkeypatch):
    """Norms 1, 10×4, 12×4, 14: median 11, absolute deviations 10, 1×8, 3 with median 1, so
    class 0's anomaly index is 10/1.4826 = 6.745 (> 2: flagged).  Norms 8, 10×4, 12×4, 14:
    median 11, deviations with median 1, index 3/1.4826 = 2.023 for class 0 at threshold 2;
    at threshold 2.1 it is not flagged."""
    nc = detector(bench, "neural_cleanse")
    monkeypatch.setattr(type(nc), "mask_norms", lambda self, model, calibration: self.norms)
    nc.norms = torch.tensor([1.0] + [10.0] * 4 + [12.0] * 4 + [14.0])
    assert nc.score(None, None) == {"score": pytest.approx(6.7449, abs=1e-4), "flagged_label": 0}
    nc.norms = torch.tensor([8.0] + [10.0] * 4 + [12.0] * 4 + [14.0])
    assert nc.score(None, None) == {"score": pytest.approx(2.0235, abs=1e-4), "flagged_label": 0}
    nc.threshold = 2.1
    assert nc.score(None, None)["flagged_label"] == -1


# 150 steps of 16 images with patience 3 instead of 1000 steps of 1000 with patience 5: enough
# for every class's cost to rise and fall a few times, so that the norms have settled.
NEURAL_CLEANSE = "neural_cleanse(steps=150,samples_per_step=16,batch_size=16,patience=3,early_stop_patience=15)"


def test_neural_cleanse_reverses_a_far_smaller_trigger_for_the_target(bench, badnets_teacher):
    """Wang et al.'s premise: the target needs a far smaller trigger than any other class.
    Measured: 1.4 for the target against 15 to 44 for the others.  The anomaly index itself
    stays below the paper's 2 here (1.55 with these settings, 2.3 with 32-image steps):
    on digits the clean classes' norms spread so widely (15 to 44) that their MAD is large."""
    norms = detector(bench, NEURAL_CLEANSE).mask_norms(badnets_teacher.model, bench.view.defender_data())
    target = badnets_teacher.backdoor["target"]
    others = torch.cat([norms[:target], norms[target + 1:]])
    assert norms[target] < 0.25 * others.min(), norms.tolist()


def test_neural_cleanse_reverses_no_outlying_trigger_on_the_clean_teacher(bench, clean_teacher):
    """On the clean teacher no class's trigger is much smaller than the median class's
    (measured: the smallest 18 against a median of 27).  Its anomaly index, 2.1, is above
    the backdoored teacher's 1.55 with these settings; with 100 steps of 64 images they are
    1.0 and 2.1: the index separates the two only with a longer search than this test affords."""
    norms = detector(bench, NEURAL_CLEANSE).mask_norms(clean_teacher.model, bench.view.defender_data())
    assert norms.min() > 0.5 * norms.quantile(0.5), norms.tolist()
