"""Neural Cleanse: the backdoor's target class needs an anomalously small trigger."""
import dataclasses
import math

import torch
import torch.nn.functional as F

import kdbench

MAD_TO_STD = 1.4826  # the consistency constant of the median absolute deviation under normality


@dataclasses.dataclass
class _CostSchedule:
    """The adaptive balance of one class's objective CE + cost·‖m‖₁ (the paper's Section IV-C):
    the cost starts at zero and is set to ``init_cost`` once the trigger reaches the success
    threshold for ``patience`` steps, then raised (× multiplier) after ``patience`` steps of
    success and lowered (÷ multiplier^1.5) after ``patience`` steps of failure.  The smallest
    successful mask is kept, and the search stops once it has stopped improving for
    ``early_stop_patience`` steps after the cost has moved both ways."""

    options: "NeuralCleanse"
    cost: float = 0.0
    set_counter: int = 0
    up_counter: int = 0
    down_counter: int = 0
    raised: bool = False
    lowered: bool = False
    best_norm: float = math.inf
    stall_best: float = math.inf
    stall_counter: int = 0
    done: bool = False

    def step(self, success: float, norm: float) -> bool:
        """Account for one step's success rate and mask norm; True when the mask is the best so far."""
        o = self.options
        improved = success >= o.success_threshold and norm < self.best_norm
        if improved:
            self.best_norm = norm
        if self.best_norm < math.inf:
            self.stall_counter = self.stall_counter + 1 if self.best_norm >= o.early_stop_threshold * self.stall_best else 0
        self.stall_best = min(self.stall_best, self.best_norm)
        self.done = self.raised and self.lowered and self.stall_counter >= o.early_stop_patience
        succeeded = success >= o.success_threshold
        if self.cost == 0 and succeeded:
            self.set_counter += 1
            if self.set_counter >= o.patience:
                self.cost, self.up_counter, self.down_counter, self.raised, self.lowered = o.init_cost, 0, 0, False, False
        else:
            self.set_counter = 0
        self.up_counter, self.down_counter = (self.up_counter + 1, 0) if succeeded else (0, self.down_counter + 1)
        if self.up_counter >= o.patience:
            self.up_counter, self.raised = 0, True
            self.cost *= o.cost_multiplier
        elif self.down_counter >= o.patience:
            self.down_counter, self.lowered = 0, True
            self.cost /= o.cost_multiplier ** 1.5
        return improved


@dataclasses.dataclass
class NeuralCleanse(kdbench.ModelDetector):
    """Neural Cleanse (Wang, Yao, Shan, Li, Viswanath, Zheng & Zhao, "Neural Cleanse:
    Identifying and Mitigating Backdoor Attacks in Neural Networks", IEEE S&P 2019).  For
    every class k a trigger (mask m_k ∈ [0,1]^{H×W} and pattern p_k ∈ [0,1]^{C×H×W}, both
    through tanh) is reverse-engineered on the defender's clean images so that
    (1−m_k)·x + m_k·p_k is classified as k, minimising CE + cost_k·‖m_k‖₁ with Adam
    (learning rate 0.1, betas 0.5/0.9) and the adaptive cost (``_CostSchedule``).  A step is
    ``samples_per_step`` images, drawn at random from the defender's, in mini-batches of
    ``batch_size``; success is the step's fraction classified as k.  The L1 norms of the smallest successful masks are compared
    with the median absolute deviation: the anomaly index of a class below the median is
    (median − ‖m_k‖₁) / (1.4826·MAD).  The model's score is the largest anomaly index and
    ``flagged_label`` the class it belongs to when it exceeds ``threshold`` (2 in the
    paper), else −1.  Defaults are the paper's: 1000 steps of 1000 samples in batches of
    32, initial cost 10⁻³, success threshold 0.99, patience 5, multiplier 2, early-stop
    patience 25.

    Deviations: all classes are searched at once, each mini-batch carrying a copy of the
    images for every class (the objectives are summed, and Adam being element-wise, every
    class's search is the one it would run alone, on the same images); the search ends
    when every class has stopped early or the steps run out.  A class whose trigger never
    reaches the success threshold is represented by its last mask.  On CUDA the forward
    passes run in bf16 autocast."""

    name = "neural_cleanse"
    paper = "Wang et al., Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural Networks, IEEE S&P 2019"

    steps: int = 1000
    samples_per_step: int = 1000
    batch_size: int = 32
    lr: float = 0.1
    init_cost: float = 1e-3
    success_threshold: float = 0.99
    patience: int = 5
    cost_multiplier: float = 2.0
    early_stop_threshold: float = 1.0
    early_stop_patience: int = 25
    threshold: float = 2.0
    seed: int = 0

    def validate(self):
        if min(self.steps, self.samples_per_step, self.batch_size, self.patience, self.early_stop_patience) < 1:
            raise kdbench.ConfigError("neural_cleanse: steps, samples_per_step, batch_size and the patiences must be ≥ 1")
        if self.lr <= 0 or self.init_cost <= 0 or self.cost_multiplier <= 1 or not 0 < self.success_threshold <= 1:
            raise kdbench.ConfigError("neural_cleanse: lr and init_cost must be > 0, cost_multiplier > 1, success_threshold in (0, 1]")

    def score(self, model, calibration):
        norms = self.mask_norms(model, calibration)
        median = norms.quantile(0.5)
        deviation = MAD_TO_STD * (norms - median).abs().quantile(0.5)
        anomaly = (median - norms) / deviation.clamp_min(1e-12)
        label = int(anomaly.argmax())
        index = float(anomaly[label])
        return {"score": index, "flagged_label": label if index > self.threshold else -1}

    def mask_norms(self, model, calibration) -> torch.Tensor:
        """‖m_k‖₁ of the reverse-engineered trigger of every class k."""
        model.eval()
        images = kdbench.to_float(calibration.images)
        classes, (channels, height, width) = calibration.num_classes, images.shape[1:]
        device = images.device
        generator = torch.Generator().manual_seed(self.seed)
        # the paper's random initialisation, mapped into tanh space
        mask_theta = torch.atanh((torch.rand(classes, 1, height, width, generator=generator) * 2 - 1) * (1 - 1e-6))
        pattern_theta = torch.atanh((torch.rand(classes, channels, height, width, generator=generator) * 2 - 1) * (1 - 1e-6))
        mask_theta, pattern_theta = (t.to(device).requires_grad_() for t in (mask_theta, pattern_theta))
        optimizer = torch.optim.Adam([mask_theta, pattern_theta], lr=self.lr, betas=(0.5, 0.9))
        schedules = [_CostSchedule(self) for _ in range(classes)]
        targets = torch.arange(classes, device=device)
        best = torch.full((classes,), math.inf)
        per_step = max(1, self.samples_per_step // self.batch_size)
        for _ in range(self.steps):
            successes, norms = torch.zeros(classes, device=device), torch.zeros(classes, device=device)
            for _ in range(per_step):
                x = images[torch.randint(len(images), (self.batch_size,), generator=generator).to(device)]
                mask, pattern = (torch.tanh(mask_theta) + 1) / 2, (torch.tanh(pattern_theta) + 1) / 2
                stamped = (1 - mask[:, None]) * x[None] + (mask * pattern)[:, None]  # classes × batch × C×H×W
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    logits = model(stamped.flatten(0, 1)).float().view(classes, len(x), -1)
                wanted = targets[:, None].expand(-1, len(x))
                cross_entropy = F.cross_entropy(logits.flatten(0, 1), wanted.flatten(), reduction="none").view(classes, -1).mean(1)
                norm = mask.sum((1, 2, 3))
                costs = torch.tensor([s.cost for s in schedules], device=device)
                optimizer.zero_grad(set_to_none=True)
                (cross_entropy + costs * norm).sum().backward(inputs=[mask_theta, pattern_theta])
                optimizer.step()
                successes += (logits.argmax(2) == wanted).float().mean(1).detach()
                norms += norm.detach()
            successes, norms = (successes / per_step).tolist(), (norms / per_step).tolist()
            for k, schedule in enumerate(schedules):
                if not schedule.done and schedule.step(successes[k], norms[k]):
                    best[k] = norms[k]
            if all(s.done for s in schedules):
                break
        last = ((torch.tanh(mask_theta) + 1) / 2).detach().sum((1, 2, 3)).cpu()
        return torch.where(best.isfinite(), best, last)


@kdbench.hookimpl
def register_defenses(register):
    register(NeuralCleanse)
