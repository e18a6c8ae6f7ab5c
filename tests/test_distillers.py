"""The distillation methods: each loss against a value worked out by hand (or from the paper's
formula, computed plainly), each student's clean accuracy on digits against kd's, and the
feature methods on a pair of networks of different families."""
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kdbench
from conftest import make_bench
from kdbench.metrics import clean_accuracy
from kdbench.registry import spec
from kdbench.training import Batch
from kdbench.features import matched_stages, stage_at
from kdbench_plugins.distillers.simkd import SimKDNetwork

ZOO = ["none", "simkd", "dist", "fitnet", "at(min_positions=64,beta=500)", "rkd", "pkt", "sp", "crd", "dkd"]
STUDENT = "small_cnn(width=8)"
SMALL_CNN = types.SimpleNamespace(body=None)  # a network without timm's feature_info: every map is a stage


def batch_of(labels, progress=1.0):
    labels = torch.tensor(labels)
    return Batch(torch.zeros(len(labels), 1, 16, 16), labels, torch.arange(len(labels)), progress)


def method(bench, text):
    return bench.resolve("distiller", text).component


def network(bench, text):
    return bench.resolve("architecture", text).component.network(bench.data.info)


def outputs(logits=((0.0, 0.0),), features=None, intermediates=None):
    as_tensor = lambda x: None if x is None else torch.tensor(x, dtype=torch.float32)  # noqa: E731
    return kdbench.Outputs(as_tensor(logits), as_tensor(features),
                           None if intermediates is None else [as_tensor(m) for m in intermediates])


def ce(logits, labels):
    """Cross-entropy written out: mean of −log softmax at the label."""
    return sum(math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(logits, labels)) / len(labels)


def vectors(rows):
    """Embeddings as the last feature maps that small_cnn's pooling turns back into ``rows``."""
    return [[[[v]] for v in row] for row in rows]


# ---------------------------------------------------------------- stage matching


def test_stages_pair_by_relative_depth():
    assert stage_at(3, 0.5) == 1 and stage_at(5, 0.5) == 2 and stage_at(4, 0.5) == 1
    assert matched_stages(3, 5) == [(0, 1), (1, 2), (2, 4)]
    assert matched_stages(5, 3) == [(1, 0), (2, 1), (4, 2)]
    assert matched_stages(4, 4) == [(0, 0), (1, 1), (2, 2), (3, 3)]


# ---------------------------------------------------------------- losses by hand


def test_none_is_cross_entropy(bench):
    logits = [[2.0, 0.0], [0.0, 0.0]]
    loss = method(bench, "none").loss(outputs(logits), None, batch_of([0, 1]))
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-2)) + math.log(2)) / 2, rel=1e-6)
    assert not bench.resolve("distiller", "none").registration.cls.uses_teacher


def test_kd_is_softened_kl_plus_cross_entropy(bench):
    """Student logits (0, 0), teacher (2, 0), T = 2, α = 0.5, label 0:
    0.5·T²·KL(softmax(1, 0) ‖ (½, ½)) + 0.5·log 2."""
    p = math.e / (math.e + 1)
    kl = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
    loss = method(bench, "kd(temperature=2,alpha=0.5)").loss(outputs([[0.0, 0.0]]), outputs([[2.0, 0.0]]), batch_of([0]))
    assert loss.item() == pytest.approx(0.5 * 4 * kl + 0.5 * math.log(2), rel=1e-6)


def test_dist_correlations(bench):
    student, labels = [[1.0, 0.0], [0.0, 1.0]], [0, 1]
    dist = method(bench, "dist(temperature=1,beta=1,gamma=1)")
    # two classes: every correlation is ±1; the same order gives 0, the opposite order 1 − (−1) = 2 per term
    same = dist.loss(outputs(student), outputs([[2.0, 0.0], [0.0, 2.0]]), batch_of(labels))
    opposite = dist.loss(outputs(student), outputs([[0.0, 2.0], [2.0, 0.0]]), batch_of(labels))
    assert same.item() == pytest.approx(ce(student, labels), abs=1e-6)
    assert opposite.item() == pytest.approx(ce(student, labels) + 4, abs=1e-6)


def test_dist_defaults_are_the_official_cifar_config(bench):
    """hunto/DIST_KD's dist_cifar.yaml: ori_loss_weight 1, kd_loss_weight 2, kd dist_t4, so
    CE + 2·(τ²·inter + τ²·intra) with τ = 4; numpy's Pearson coefficients on the softened
    predictions."""
    s = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [0.0, 0.7, 0.2]])
    t = np.array([[3.0, 1.0, 0.0], [0.5, 0.1, 1.5], [-1.0, 2.0, 0.3]])
    soft = lambda z: np.exp(z / 4) / np.exp(z / 4).sum(1, keepdims=True)  # noqa: E731
    ys, yt = soft(s), soft(t)
    inter = 1 - np.mean([np.corrcoef(ys[i], yt[i])[0, 1] for i in range(3)])
    intra = 1 - np.mean([np.corrcoef(ys[:, c], yt[:, c])[0, 1] for c in range(3)])
    loss = method(bench, "dist").loss(outputs(s.tolist()), outputs(t.tolist()), batch_of([0, 2, 1]))
    assert loss.item() == pytest.approx(ce(s.tolist(), [0, 2, 1]) + 2 * (16 * inter + 16 * intra), rel=1e-5)


def test_dkd_decouples_kd(bench):
    s, t, labels = [[1.0, 2.0, 0.5], [0.2, 0.1, 1.0]], [[3.0, 0.0, 1.0], [0.0, 1.0, 2.5]], [0, 2]
    T = 4.0
    tckd = nckd = 0.0
    for zs, zt, y in zip(s, t, labels):
        ps = [math.exp(v / T) / sum(math.exp(u / T) for u in zs) for v in zs]
        pt = [math.exp(v / T) / sum(math.exp(u / T) for u in zt) for v in zt]
        bs, bt = [ps[y], 1 - ps[y]], [pt[y], 1 - pt[y]]
        tckd += sum(b * math.log(b / a) for a, b in zip(bs, bt)) / 2
        rest = [c for c in range(3) if c != y]
        qs = [ps[c] / (1 - ps[y]) for c in rest]
        qt = [pt[c] / (1 - pt[y]) for c in rest]
        nckd += sum(b * math.log(b / a) for a, b in zip(qs, qt)) / 2
        # the paper's decomposition: KD = TCKD + (1 − p_t)·NCKD
        kd = sum(b * math.log(b / a) for a, b in zip(ps, pt))
        assert kd == pytest.approx(sum(b * math.log(b / a) for a, b in zip(bs, bt))
                                   + (1 - pt[y]) * sum(b * math.log(b / a) for a, b in zip(qs, qt)))
    dkd = method(bench, "dkd")
    full = dkd.loss(outputs(s), outputs(t), batch_of(labels, progress=1.0))
    assert full.item() == pytest.approx(ce(s, labels) + T * T * (1 * tckd + 8 * nckd), rel=1e-5)
    half_warm = dkd.loss(outputs(s), outputs(t), batch_of(labels, progress=dkd.warmup / 2))
    assert half_warm.item() == pytest.approx(ce(s, labels) + 0.5 * T * T * (tckd + 8 * nckd), rel=1e-5)
    assert dkd.loss(outputs(s), outputs(t), batch_of(labels, progress=0.0)).item() == pytest.approx(ce(s, labels))


def test_at_attention_maps(bench):
    at = method(bench, "at")
    student = outputs([[0.0, 0.0]], intermediates=[[[[[1.0, 0.0], [0.0, 0.0]]]]])  # one channel, 2×2
    # the teacher's 4×4 map has its mass in the top-right 2×2 block: pooled, it is [[0, 2], [0, 0]]
    teacher_map = [[[[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [0.0] * 4, [0.0] * 4]]]
    teacher = outputs([[0.0, 0.0]], intermediates=[teacher_map, teacher_map])
    at.setup(SMALL_CNN, SMALL_CNN, teacher, student)
    assert at.pairs == [(0, 1)]
    # attention maps [1, 0, 0, 0] and [0, 1, 0, 0]: squared distance 2, averaged over the 4 positions
    assert at.loss(student, teacher, batch_of([0])).item() == pytest.approx(math.log(2) + 1000 * 2 / 4, rel=1e-6)
    # the option: averaged as over 8×8 positions
    floored = method(bench, "at(min_positions=64)")
    floored.setup(SMALL_CNN, SMALL_CNN, teacher, student)
    assert floored.loss(student, teacher, batch_of([0])).item() == pytest.approx(math.log(2) + 1000 * 2 / 64, rel=1e-6)


def test_at_is_the_authors_loss(bench):
    """szagoruyko/attention-transfer: at(x) = normalize(x.pow(2).mean(1).view(B, −1)),
    at_loss = (at(x) − at(y)).pow(2).mean(), loss = CE + β·Σ at_loss; a larger map is first
    average-pooled to the smaller (RepDistiller, mdistiller)."""
    torch.manual_seed(0)
    s_maps = [torch.randn(3, 4, 8, 8), torch.randn(3, 5, 4, 4), torch.randn(3, 6, 2, 2)]
    t_maps = [torch.randn(3, 7, 8, 8), torch.randn(3, 2, 8, 8), torch.randn(3, 3, 2, 2)]
    logits, labels = torch.randn(3, 10), [1, 4, 7]
    at = method(bench, "at")
    student, teacher = kdbench.Outputs(logits, None, s_maps), kdbench.Outputs(logits, None, t_maps)
    at.setup(SMALL_CNN, SMALL_CNN, teacher, student)

    def attention(x):
        return F.normalize(x.pow(2).mean(1).view(x.size(0), -1))

    expected = sum((attention(s) - attention(F.adaptive_avg_pool2d(t, s.shape[-2:]))).pow(2).mean()
                   for s, t in zip(s_maps, t_maps))
    loss = at.loss(student, teacher, batch_of(labels))
    assert loss.item() == pytest.approx(F.cross_entropy(logits, torch.tensor(labels)).item() + 1000 * expected.item(),
                                        rel=1e-5)


def test_at_pairs_the_stages_of_a_timm_resnet_not_its_stem(bench):
    """timm's ResNet lists its stem's output (``act1``) first among five maps; the pairs use
    the four residual stages, as the references pair the residual groups."""
    resnet, small = network(bench, "resnet10t"), network(bench, STUDENT)
    assert kdbench.stage_indices(resnet, 5) == [1, 2, 3, 4]
    assert kdbench.stage_indices(network(bench, "densenet121"), 5) == [1, 2, 3, 4]  # features.norm0 is its stem
    assert kdbench.stage_indices(network(bench, "regnetx_002"), 5) == [1, 2, 3, 4]
    assert kdbench.stage_indices(network(bench, "convnext_atto"), 4) == [0, 1, 2, 3]  # no stem map listed
    assert kdbench.stage_indices(small, 3) == [0, 1, 2]
    x = torch.rand(2, 1, 16, 16)
    at = method(bench, "at")
    with torch.no_grad():
        at.setup(resnet.eval(), small.eval(), resnet.run(x, at.needs), small.run(x, at.needs))
    assert at.pairs == [(0, 1), (1, 3), (2, 4)]  # depths 1/3, 2/3, 1 against 1/4, 1/2, 3/4, 1


def test_fitnet_hint_through_regressor(bench):
    fitnet = method(bench, "fitnet")
    guided = torch.randn(2, 3, 4, 4).tolist()
    hint = [[[[1.0, 3.0], [0.0, 2.0]]] * 5] * 2  # the teacher's middle stage: 5 channels, 2×2, non-negative
    student = outputs([[0.0, 0.0]] * 2, intermediates=[guided, guided, guided])
    teacher = outputs([[0.0, 0.0]] * 2, intermediates=[hint, hint, hint])
    fitnet.setup(None, None, teacher, student)
    regressor = fitnet.parts["regressor"]
    assert (fitnet.guided, fitnet.hint) == (1, 1)
    assert isinstance(regressor[-1], torch.nn.ReLU)
    assert regressor(torch.tensor(guided)[:, :, :2, :2]).shape == (2, 5, 2, 2)
    torch.nn.init.zeros_(regressor[0].weight)  # a zero regressor predicts 0: the loss is β·mean(hint²)
    loss = fitnet.loss(student, teacher, batch_of([0, 1]))
    assert loss.item() == pytest.approx(math.log(2) + 100 * (1 + 9 + 0 + 4) / 4, rel=1e-6)


def test_simkd_projects_onto_the_teacher_and_reuses_its_classifier(bench):
    simkd = method(bench, "simkd")
    student_net, teacher_net = network(bench, "small_cnn(width=4)"), network(bench, "small_cnn(width=8)")
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        s_probe, t_probe = student_net.run(x, simkd.needs), teacher_net.run(x, simkd.needs)
    simkd.setup(teacher_net, student_net, t_probe, s_probe)
    deployed = simkd.deploy(student_net, teacher_net).eval()
    assert isinstance(deployed, kdbench.Network)
    with torch.no_grad():  # student features → projector → the teacher's pooling and classifier
        projected = simkd.parts["projector"](student_net.features(x))
        expected = teacher_net.body.get_classifier()(projected.mean((2, 3)))
        assert torch.allclose(deployed(x), expected, atol=1e-6)
        assert deployed.features(x).shape == t_probe.features.shape
        assert torch.allclose(deployed.run(x, frozenset({"intermediates"})).logits, expected, atol=1e-6)
    simkd.parts.train()
    torch.nn.init.zeros_(simkd.parts["projector"][-3].weight)  # the last conv: the projection is 0, the loss mean(t²)
    loss = simkd.loss(s_probe, t_probe, batch_of([0, 1, 2, 3]))
    assert loss.item() == pytest.approx(t_probe.features.pow(2).mean().item(), rel=1e-5)


def test_rkd_distances_and_angles(bench):
    rkd = method(bench, "rkd")
    student_net = network(bench, "small_cnn(width=1)")
    rkd.setup(student_net, student_net, None, None)
    # the student's three points on a line (0, 1, 2), the teacher's an equilateral triangle
    line = vectors([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    triangle = vectors([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    huber = lambda d: 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5  # noqa: E731
    # distances over their mean 4/3 are 0.75, 1.5, 0.75 against 1, 1, 1; 9 entries with the diagonal
    distance = (4 * huber(0.25) + 2 * huber(0.5)) / 9
    # cosines at a vertex between two other points: the line has 1, −1, 1, the triangle 0.5; 27 entries
    angle = (4 * huber(0.5) + 2 * huber(1.5)) / 27
    loss = rkd.loss(outputs([[0.0, 0.0]] * 3, line), outputs([[0.0, 0.0]] * 3, triangle), batch_of([0, 1, 0]))
    assert loss.item() == pytest.approx(math.log(2) + 25 * distance + 50 * angle, rel=1e-5)


def test_pkt_neighbour_probabilities(bench):
    pkt = method(bench, "pkt")
    student_net = network(bench, "small_cnn(width=1)")
    pkt.setup(student_net, student_net, None, None)
    # student points orthogonal: kernel rows (1, 1/2) → (2/3, 1/3); teacher points equal: rows (1/2, 1/2)
    divergence = 2 * (0.5 * math.log(0.5 / (2 / 3)) + 0.5 * math.log(0.5 / (1 / 3))) / 4
    loss = pkt.loss(outputs([[0.0, 0.0]] * 2, vectors([[1.0, 0.0], [0.0, 1.0]])),
                    outputs([[0.0, 0.0]] * 2, vectors([[1.0, 0.0], [1.0, 0.0]])), batch_of([0, 1]))
    assert loss.item() == pytest.approx(math.log(2) + 30000 * divergence, rel=1e-5)


def test_sp_similarity_matrices(bench):
    # student activations (1, 0), (1, 1): Gram [[1, 1], [1, 2]], rows (1, 1)/√2 and (1, 2)/√5; teacher's: identity
    r2, r5 = math.sqrt(2), math.sqrt(5)
    frobenius = (1 / r2 - 1) ** 2 + (1 / r2) ** 2 + (1 / r5) ** 2 + (2 / r5 - 1) ** 2
    loss = method(bench, "sp").loss(outputs([[0.0, 0.0]] * 2, [[[[1.0]], [[0.0]]], [[[1.0]], [[1.0]]]]),
                                    outputs([[0.0, 0.0]] * 2, [[[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]]),
                                    batch_of([0, 1]))
    assert loss.item() == pytest.approx(math.log(2) + 3000 * frobenius / 4, rel=1e-6)


def test_crd_noise_contrastive_estimate(bench):
    n, tau = 4, 0.07
    crd = method(bench, f"crd(negatives={n},embedding_dim=2)")
    student_net = network(bench, "small_cnn(width=1)")
    probe = outputs(features=vectors([[1.0, 0.0]]))
    crd.setup(student_net, student_net, probe, probe)
    for name in ("student", "teacher"):
        torch.nn.init.eye_(crd.parts[name].weight)
        torch.nn.init.zeros_(crd.parts[name].bias)
    memory = crd.parts["memory"]
    memory.grow(2)
    memory.student, memory.teacher = torch.tensor([[1.0, 0.0]] * 2), torch.tensor([[0.0, 1.0]] * 2)
    # normalised, the student's anchors are (±0.6, 0.8) and the teacher's (1, ±1)/√2
    s = outputs([[0.0, 0.0]] * 2, vectors([[3.0, 4.0], [-3.0, 4.0]]))
    t = outputs([[0.0, 0.0]] * 2, vectors([[1.0, 1.0], [1.0, -1.0]]))
    # every anchor scores the same against every row of the other bank (0.8 and 1/√2): Z = e^{score/τ}
    # and the critic h = 1/(1 + N) throughout, so each anchor costs log(1 + N) + N·log((1 + N)/N)
    per_anchor = math.log(1 + n) + n * math.log((1 + n) / n)
    assert crd.loss(s, t, batch_of([0, 1])).item() == pytest.approx(math.log(2) + 0.8 * 2 * per_anchor, rel=1e-5)
    # the memories moved halfway towards the normalised embeddings
    assert torch.allclose(memory.student[0], F.normalize(torch.tensor([0.5 + 0.5 * 0.6, 0.5 * 0.8]), dim=0))
    r = 1 / math.sqrt(2)
    assert torch.allclose(memory.teacher[1], F.normalize(torch.tensor([0.5 * r, 0.5 - 0.5 * r]), dim=0))
    # a second batch: Z stays the first batch's; the paper's critic written out with exp
    z = {"teacher": math.exp(0.8 / tau), "student": math.exp(r / tau)}
    drawn = []
    sample = memory.sample
    memory.sample = lambda count: drawn.append(sample(count)) or drawn[-1]
    memory.student = F.normalize(torch.tensor([[1.0, 2.0], [-1.0, 0.5]]), dim=1)
    memory.teacher = F.normalize(torch.tensor([[0.3, -1.0], [2.0, 1.0]]), dim=1)
    banks = {"student": memory.student.clone(), "teacher": memory.teacher.clone()}
    loss = crd.loss(s, t, batch_of([0, 1]))
    expected = 0.0
    for anchors, bank in (([[0.6, 0.8], [-0.6, 0.8]], "teacher"), ([[r, r], [r, -r]], "student")):
        for i, anchor in enumerate(torch.tensor(anchors)):
            def h(row):
                e = math.exp(float(anchor @ row) / tau)
                return e / (e + n * z[bank])
            expected += -math.log(h(banks[bank][i])) - sum(math.log(1 - h(banks[bank][k])) for k in drawn[0])
    assert loss.item() == pytest.approx(math.log(2) + 0.8 * expected / 2, rel=1e-5)


# ---------------------------------------------------------------- trained students


def test_every_student_on_digits_comes_close_to_kd(host, store, clean_teacher):
    """All the methods and kd train in lock-step from the quick suite's clean teacher; a
    narrower student and a third of the quick suite's epochs keep this within CPU budget.
    AT weighs the small CNN's small maps as 8×8 ones, as quick-methods does, and at this
    cut (width 8, 10 epochs) with half the authors' β: at β = 1000 the attention term holds
    this student at 0.78 to 0.85 (it reaches 0.99 at quick-methods' width 16 and 30 epochs)."""
    bench = make_bench(host, store, distillers=[spec(name, "distiller") for name in ["kd"] + ZOO],
                       students=[spec(STUDENT, "architecture")], student_epochs=10)
    students = bench.runner.students_of(bench.view, clean_teacher, 0)
    accuracy = {name: clean_accuracy(model, bench.data.test_images, bench.data.test_labels)
                for (name, _), (model, _, _) in students.items()}
    print(accuracy)
    assert accuracy["kd"] > 0.9
    assert {name for name, value in accuracy.items() if value < accuracy["kd"] - 0.08} == set(), accuracy
    assert isinstance(students[("simkd", STUDENT)][0], SimKDNetwork)


@pytest.mark.parametrize("teacher_arch, student_arch", [("resnet18", "small_cnn(width=8)"),
                                                        ("small_cnn(width=8)", "mobilenetv2_050")])
def test_feature_methods_across_families(bench, teacher_arch, student_arch):
    """A timm teacher and a student of another family (and the other way round): every
    feature method sizes its parts from the probe and takes one optimiser step."""
    torch.manual_seed(0)
    teacher, student = network(bench, teacher_arch).eval(), network(bench, student_arch)
    x = torch.rand(8, 1, 16, 16)
    labels = torch.arange(8) % 10
    for name in ["simkd", "fitnet", "at", "rkd", "pkt", "sp", "crd"]:
        distiller = method(bench, name)
        with torch.no_grad():
            teacher_out = teacher.run(x, distiller.needs)
            distiller.setup(teacher, student, teacher_out, student.eval().run(x, distiller.needs))
        params = list(student.parameters()) + list(distiller.parts.parameters())
        optimizer = torch.optim.SGD(params, lr=0.01)
        student.train(), distiller.parts.train()
        loss = distiller.loss(student.run(x, distiller.needs), teacher_out, Batch(x, labels, torch.arange(8), 0.5))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss), name
        assert all(torch.isfinite(p).all() for p in params), name
        deployed = distiller.deploy(student, teacher).eval()
        with torch.no_grad():
            assert deployed(x).shape == (8, 10), name
