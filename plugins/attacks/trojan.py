"""Trojan: a patch whose pattern is optimised to excite chosen neurons of the clean model."""
import dataclasses
import math

import torch

import kdbench
from kdbench.triggers import PatchTrigger


def pre_logits(model: kdbench.Network, x: torch.Tensor) -> torch.Tensor:
    """The layer before the classifier: pooled features (timm's ``forward_head(pre_logits=True)``)."""
    return model.body.forward_head(model.features(x), pre_logits=True)


class TrojanTrigger(PatchTrigger):
    """A patch trigger that also records the internal neurons its pattern was optimised to excite."""

    def __init__(self, mask: torch.Tensor, pattern: torch.Tensor, neurons: int):
        super().__init__(mask, pattern)
        self.register_buffer("neurons", torch.zeros(neurons, dtype=torch.long))


@dataclasses.dataclass
class Trojan(kdbench.PoisoningAttack):
    """Trojaning attack (Liu, Ma, Aafer, Lee, Zhai, Wang & Zhang, "Trojaning Attack on Neural
    Networks", NDSS 2018).

    (1) The trigger region is a square in the bottom-right corner covering ``area`` of the
    image.  (2) In an internal layer of the clean model (here the layer before the
    classifier) the ``neurons`` most strongly connected to that region are selected.
    (3) The pattern inside the region is optimised by gradient descent (Adam, ``steps``
    steps of ``step_size``) so that the selected neurons reach ``activation``:
    min Σ (activation − a_k(stamp(x)))².  (4) The clean model is retrained on data stamped
    with the trigger and relabelled to the target, mixed with clean data.

    The trigger records the selected neurons.

    Deviations: the paper measures a neuron's connection to the trigger region by the weights
    that feed it; here it is measured by how far random patterns stamped into the region
    raise the neuron's activation on average (a neuron the region can drive up, found without
    reading the architecture's weights).
    The paper retrains on inputs reverse-engineered from the model because its attacker has
    no training data; this attacker has its half of the training set, so ``poison_rate`` of it
    is stamped, and the clean model is fine-tuned on it for the suite's teacher epochs at
    ``retrain_lr`` × the suite's learning rate.
    """

    name = "trojan"
    paper = "Liu et al., Trojaning Attack on Neural Networks, NDSS 2018"
    needs_clean_teacher = True

    area: float = 0.07
    neurons: int = 1
    activation: float = 100.0
    steps: int = 200
    step_size: float = 0.1
    retrain_lr: float = 0.1

    def validate(self):
        super().validate()
        if not 0 < self.area <= 1:
            raise kdbench.ConfigError(f"trojan: area must be in (0, 1], got {self.area}")
        kdbench.check_range(self.name, "retrain_lr", self.retrain_lr, 1e-6, 10.0)
        if self.neurons < 1 or self.steps < 1 or self.step_size <= 0:
            raise kdbench.ConfigError(
                f"trojan: neurons and steps must be ≥ 1 and step_size positive, got {self.neurons}, {self.steps}, {self.step_size}")

    def side(self, size: int) -> int:
        return max(1, round(math.sqrt(self.area) * size))

    def build_trigger(self, info) -> TrojanTrigger:
        mask = torch.zeros(1, info.size, info.size)
        side = self.side(info.size)
        mask[:, -side:, -side:] = 1
        return TrojanTrigger(mask, torch.zeros(info.channels, info.size, info.size), self.neurons)

    def select_neurons(self, model, images, trigger, generator) -> torch.Tensor:
        """The neurons that patterns in the trigger region drive up most (mean Δa over random patterns)."""
        with torch.no_grad():
            clean = pre_logits(model, images)
            if self.neurons > clean.shape[1]:
                raise kdbench.ConfigError(f"trojan: neurons {self.neurons} exceeds the layer's {clean.shape[1]} neurons")
            response = torch.zeros(clean.shape[1], device=images.device)
            for _ in range(8):
                pattern = torch.rand(trigger.pattern.shape, generator=generator).to(images.device)
                stamped = images * (1 - trigger.mask) + pattern * trigger.mask
                response += (pre_logits(model, stamped) - clean).mean(0)
        return response.topk(self.neurons).indices

    def make_trigger(self, ctx) -> TrojanTrigger:
        trigger = self.build_trigger(ctx.info).to(ctx.device)
        model = ctx.clean_teacher.eval()
        generator = ctx.generator(4)
        sample = torch.randperm(len(ctx.images), generator=generator)[:256]
        images = kdbench.to_float(kdbench.take(ctx.images, sample, ctx.device))
        chosen = self.select_neurons(model, images, trigger, generator)
        pattern = torch.rand(trigger.pattern.shape, generator=generator).to(ctx.device).requires_grad_()
        optimizer = torch.optim.Adam([pattern], lr=self.step_size)
        model.requires_grad_(False)
        for _ in range(self.steps):
            stamped = images * (1 - trigger.mask) + pattern * trigger.mask
            loss = (self.activation - pre_logits(model, stamped)[:, chosen]).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                pattern.clamp_(0, 1)
        model.requires_grad_(True)
        trigger.pattern.copy_(pattern.detach() * trigger.mask)
        trigger.neurons.copy_(chosen)
        return trigger

    def run(self, ctx) -> kdbench.Backdoor:
        trigger = self.make_trigger(ctx)
        indices = self.choose_poison(ctx)
        images, labels = self.poison(ctx, trigger, indices)
        teacher = ctx.train(ctx.clean_teacher, images, labels, lr_scale=self.retrain_lr)
        return kdbench.Backdoor(teacher, trigger, self.target, indices, labels[indices.to(ctx.device)].cpu())


@kdbench.hookimpl
def register_attacks(register):
    register(Trojan)
