"""The distillation-aware attacks (issue 3) each show, on digits, the property its paper claims.

The options shrink each attack's budgets (epochs, outer iterations, fixed-point steps) so
that the file runs in about a minute on two CPU cores; the algorithms are unchanged.
"""
import pytest
import torch
import torch.nn.functional as F

import kdbench
from kdbench.metrics import attack_metrics, clean_accuracy
from kdbench_plugins.attacks.scar import AdditiveTrigger, surrogate_loss

BACKWEAK = "backweak"
ADBA = "adba(epochs=0.5)"
SCAR = "scar(outer_epochs=0.1,outer_batches=2,fixed_point_iters=10,student=small_cnn(width=16))"
OSCAR = "oscar(epochs=0.2,student=small_cnn(width=16))"


def asr(bench, model, teacher) -> float:
    backdoor = teacher.backdoor
    return attack_metrics(model, bench.data.test_images, bench.data.test_labels,
                          backdoor["trigger"], backdoor["target"])[0]


def accuracy(bench, model) -> float:
    return clean_accuracy(model, bench.data.test_images, bench.data.test_labels)


def test_backweak_trigger_is_weak_and_the_fine_tuned_teacher_answers_it(bench, clean_teacher):
    attack = bench.resolve("attack", BACKWEAK).component
    teacher = bench.teacher(BACKWEAK)
    delta = teacher.backdoor["trigger"].delta
    assert 0 < delta.abs().max() <= attack.epsilon + 1e-6
    assert asr(bench, clean_teacher.model, teacher) <= attack.budget_asr + 0.02
    assert asr(bench, teacher.model, teacher) > 0.8
    assert accuracy(bench, teacher.model) > accuracy(bench, clean_teacher.model) - 0.1


def test_adba_teacher_answers_its_optimised_trigger(bench, clean_teacher):
    teacher = bench.teacher(ADBA)
    assert asr(bench, teacher.model, teacher) > 0.9
    assert asr(bench, clean_teacher.model, teacher) < 0.5
    assert accuracy(bench, teacher.model) > accuracy(bench, clean_teacher.model) - 0.1


def test_scar_teacher_hides_the_backdoor_that_its_student_learns(bench, clean_teacher):
    teacher = bench.teacher(SCAR)
    (student, _, _), = bench.runner.students_of(bench.view, teacher, 0).values()
    teacher_asr = asr(bench, teacher.model, teacher)
    assert teacher_asr < 0.2
    assert asr(bench, student, teacher) > teacher_asr + 0.2
    assert accuracy(bench, teacher.model) > accuracy(bench, clean_teacher.model) - 0.1


def test_oscar_teacher_ignores_an_adversarial_trigger(bench, clean_teacher):
    teacher = bench.teacher(OSCAR)
    assert asr(bench, clean_teacher.model, teacher) > 0.5  # pre-optimised against the clean teacher
    assert asr(bench, teacher.model, teacher) < 0.2
    assert accuracy(bench, teacher.model) > accuracy(bench, clean_teacher.model) - 0.1


def test_scar_implicit_gradient_matches_an_unrolled_student_step(bench):
    """With one fixed-point step, the teacher's gradient through the student equals the
    gradient of the student terms after one differentiable step of the student's training."""
    eta = 1e-4
    attack = bench.resolve("attack", f"scar(fixed_point_iters=1,fixed_point_lr={eta})").component
    architecture = bench.resolve("architecture", "small_cnn(width=4)").component
    torch.manual_seed(0)
    teacher, student = (architecture.network(bench.data.info) for _ in range(2))
    student.eval()
    x = kdbench.to_float(bench.view.attacker_images[:32])
    y = bench.view.attacker_labels[:32]
    trigger = AdditiveTrigger(0.1 * torch.randn(x.shape[1:]).sign())
    triggered = trigger.apply(x).clamp(0, 1)
    target = torch.full_like(y, attack.target)
    lam, omega = list(teacher.parameters()), dict(student.named_parameters())

    teacher.train()
    teacher_clean = teacher(x)
    direct = torch.autograd.grad(F.cross_entropy(teacher_clean, y) + F.cross_entropy(teacher(triggered), y), lam,
                                 retain_graph=True)
    inner = torch.autograd.grad(surrogate_loss(student(x), teacher_clean, y), list(omega.values()), create_graph=True)
    stepped = {name: w - eta * g for (name, w), g in zip(omega.items(), inner)}
    run = lambda images: torch.func.functional_call(student, stepped, (images,))  # noqa: E731
    unrolled = torch.autograd.grad(F.cross_entropy(run(x), y) + F.cross_entropy(run(triggered), target), lam)

    attack.outer_step(teacher, student, torch.optim.SGD(lam, lr=0.0), x, y, trigger)
    implicit = torch.cat([(p.grad - d).flatten() for p, d in zip(lam, direct)])
    expected = torch.cat([u.flatten() for u in unrolled])
    assert expected.norm() > 0
    assert torch.allclose(implicit, expected, rtol=1e-2, atol=1e-3 * expected.abs().max().item())


@pytest.mark.parametrize("text", ["backweak(epsilon=0)", "backweak(budget_asr=2)", "adba(p=0.5)", "adba(alpha=1.5)",
                                  "scar(fixed_point_iters=0)", "scar(epsilon=3)", "oscar(alpha=-1)"])
def test_impossible_options_are_refused(bench, text):
    with pytest.raises(kdbench.ConfigError):
        bench.resolve("attack", text)
