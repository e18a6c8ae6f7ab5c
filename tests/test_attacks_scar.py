"""SCAR and its ablation OSCAR (issue 3) on digits, at budgets that run in a minute or two on
two CPU cores (the algorithms are unchanged; only outer iterations and fixed-point steps shrink).

Both use ε = 0.3 here: on the 16-px digits a universal perturbation of ε = 0.1 sends under
1 % of the test images to the target on the clean small CNN, so the trigger the two attacks
pre-optimise would carry nothing to hide.  The bars are those these budgets reach, not the
paper's CIFAR-10 figures (see each test).
"""
import copy

import torch
import torch.nn.functional as F

import kdbench
from conftest import accuracy, asr
from kdbench_plugins.attacks.scar import surrogate_loss
from kdbench.triggers import AdditiveTrigger

SCAR = "scar(epsilon=0.3,trigger_lr=0.05,outer_epochs=0.5,outer_batches=5,fixed_point_iters=10,teacher_lr=0.002)"
OSCAR = "oscar(epsilon=0.3,trigger_lr=0.05,epochs=0.3,teacher_lr=0.0005)"


def test_scar_teacher_looks_clean_while_its_students_learn_the_backdoor(bench, clean_teacher):
    """Both of the paper's claims, on a trigger that fools the clean teacher: the released
    teacher mostly keeps the true label on triggered inputs, while its KD student answers the
    trigger far more often than the teacher does.

    Measured with 15 outer iterations of 5 batches at twice the code's teacher rate (Adam
    2e-3) and η = 1/λ_max, one thread, over seeds 0, 1 and 2 (clean teacher / teacher /
    student ASR, teacher CA against the clean teacher's): 0.75 / 0.07 / 0.52, CA 0.92 against
    0.99; 0.84 / 0.03 / 0.54, 0.85; 0.88 / 0.31 / 0.77, 0.80.  With 10 batches at the code's
    rate, at 1.4 times the time: 0.75 / 0.04 / 0.66; 0.84 / 0.05 / 0.74; 0.88 / 0.26 / 0.70; on
    two threads and another CPU, teachers 0.05 to 0.25 and students 0.71 to 0.84.  The
    student's lead over its teacher held for every target tried (targets 1 and 7: 0.13 → 0.42
    and 0.26 → 0.88).  Not reproduced at this budget, hence not asserted: a student ASR above
    that of the clean teacher's student, which the pre-optimised trigger fools too (0.56, 0.48
    and 0.85), and the unchanged clean accuracy (drops of 0.05 to 0.27)."""
    teacher = bench.teacher(SCAR)
    assert asr(bench, clean_teacher.model, teacher) > 0.3
    teacher_asr = asr(bench, teacher.model, teacher)
    assert teacher_asr < 0.35
    (student, _, _), = bench.runner.students_of(bench.view, teacher, 0).values()
    assert asr(bench, student, teacher) > teacher_asr + 0.3
    assert accuracy(bench, teacher.model) > accuracy(bench, clean_teacher.model) - 0.35


def test_oscar_teacher_ignores_an_adversarial_trigger_and_so_do_its_students(bench, clean_teacher):
    """SCAR's ablation without surrogate students: the teacher is robust to the trigger and
    passes that on.  At the reference's teacher rate of 1e-4 this takes 18 of the 30 epochs
    (after 6 the teacher still answers 0.14 of the triggers, its student 0.22); at five times
    that rate, 9 epochs.  Measured so, one thread, seeds 0, 1 and 2: clean teachers 0.75, 0.84
    and 0.88; teachers 0.007, 0.060 and 0.041; their students 0.05, 0.05 and 0.22 against
    0.56, 0.48 and 0.85 for the clean teachers' students; clean accuracy 0.01 to 0.03 below
    the clean teachers' (at the reference's rate and 18 epochs, teacher 0.03 and student 0.12
    for seed 0; at 9 epochs and twice that rate, seed 1's teacher stays at 0.11)."""
    teacher = bench.teacher(OSCAR)
    assert asr(bench, clean_teacher.model, teacher) > 0.3  # pre-optimised against the clean teacher
    assert asr(bench, teacher.model, teacher) < 0.1
    assert accuracy(bench, teacher.model) > accuracy(bench, clean_teacher.model) - 0.1
    (student, _, _), = bench.runner.students_of(bench.view, teacher, 0).values()
    (control, _, _), = bench.runner.students_of(bench.view, clean_teacher, 0).values()
    assert asr(bench, student, teacher) < asr(bench, control, teacher) - 0.25


def test_scar_implicit_gradient_matches_an_unrolled_student_step(bench):
    """With one fixed-point step, the teacher's gradient through the student equals the
    gradient of the student terms after one differentiable step of the student's training."""
    eta = 1e-4
    attack = bench.resolve("attack", "scar(fixed_point_iters=1)").component
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

    attack.outer_step(teacher, student, torch.optim.SGD(lam, lr=0.0), x, y, trigger, eta)
    implicit = torch.cat([(p.grad - d).flatten() for p, d in zip(lam, direct)])
    expected = torch.cat([u.flatten() for u in unrolled])
    assert expected.norm() > 0
    assert torch.allclose(implicit, expected, rtol=1e-2, atol=1e-3 * expected.abs().max().item())


def test_scar_fixed_point_step_comes_from_the_top_of_the_hessian_spectrum(bench, clean_teacher):
    """The power-iteration estimate λ̂ is the inner Hessian's largest curvature: with η = 1/λ̂
    the fixed-point increments (I − ηH)ᵏg do not grow, with η = 4/λ̂ they explode (measured
    over seeds 0, 1 and 2: growths 1.000, and 2035, 26616 and 5643)."""
    attack = bench.resolve("attack", "scar").component
    teacher, student = clean_teacher.model, copy.deepcopy(clean_teacher.model).eval()
    x = kdbench.to_float(bench.view.attacker_images[:64])  # a batch of the suite's size, as in SCAR's outer steps
    y = bench.view.attacker_labels[:64]
    torch.manual_seed(0)
    curvature = attack.largest_curvature(teacher, student, x, y)
    omega = list(student.parameters())
    with torch.no_grad():
        teacher_logits = teacher(x)
    inner = torch.autograd.grad(surrogate_loss(student(x), teacher_logits, y), omega, create_graph=True)
    g = [torch.randn_like(w) for w in omega]
    norm = lambda vectors: torch.sqrt(sum((v ** 2).sum() for v in vectors)).item()  # noqa: E731

    def growth(eta, steps=15):
        v = g
        for _ in range(steps):
            hv = torch.autograd.grad(inner, omega, grad_outputs=v, retain_graph=True)
            v = [a - eta * h for a, h in zip(v, hv)]
        return norm(v) / norm(g)

    assert growth(1 / curvature) <= 1.01
    assert growth(4 / curvature) > 100
