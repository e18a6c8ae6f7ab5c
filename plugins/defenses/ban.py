"""BAN: adversarial noise on the batch-norm neurons wakes a backdoor; a feature mask isolates it."""
import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import kdbench


@dataclasses.dataclass
class BAN(kdbench.ModelDetector):
    """BAN (Xu, Liu, Koffas, Yu & Picek, "BAN: Detecting Backdoors Activated by Adversarial
    Neuron Noise", NeurIPS 2024), as the official ``ban_detection.py`` (xiaoyunxxy/ban) does it,
    on a copy of the model in training mode, with the defender's clean data:

    1. A feature mask m (the shape of one image's last feature map, uniform in [0, 1] at
       first) learned with Adam (``mask_lr``) for ``mask_epochs`` passes of ``batches``
       batches of ``batch_size`` images drawn with replacement, on
       CE(head(m⊙f), y) − CE(head((1−m)⊙f), y) + ``mask_lambda``·‖m‖₁/‖m‖₁ (the norm's value
       held fixed), m clipped to [0, 1] before each step: m keeps the benign features, 1 − m
       the rest.
    2. Adversarial neuron noise: every batch-norm layer's weight and bias scaled by 1 + n
       with n uniform in ±``eps``, then ``steps`` signed-gradient steps of ``eps``/``steps``
       that raise the clean loss, once per batch of another such pass; the last batch's
       noise stays.
    3. The noisy model in evaluation mode classifies the defender's images from their
       (1 − m)-masked features.  A backdoored model's noise-woken backdoor sends them to its
       target; a clean model keeps most right.

    The defaults are the official README's detection command (``--mask-lambda 0.75 --steps 30
    --eps 0.3 --print-every 20``; the script's own defaults, λ 0.25, one step and 10 batches,
    leave a clean small CNN as wrong as a backdoored one on digits).

    The official script prints that accuracy and the prediction histogram and leaves the
    decision to the reader (its ``--acc-threshold`` of 0.25 is declared but unused); the
    score here is the error, 1 − accuracy, and ``flagged_label`` the most predicted class
    where the accuracy is below ``acc_threshold`` (−1 otherwise).  Like the official code,
    the passes in training mode update the batch-norm statistics of the copy.
    """

    name = "ban"
    paper = "Xu et al., BAN: Detecting Backdoors Activated by Adversarial Neuron Noise, NeurIPS 2024"

    eps: float = 0.3
    steps: int = 30
    mask_epochs: int = 20
    mask_lr: float = 0.01
    mask_lambda: float = 0.75
    batch_size: int = 128
    batches: int = 20
    acc_threshold: float = 0.25
    seed: int = 0

    def validate(self):
        kdbench.check_positive(self, "steps", "mask_epochs", "mask_lr", "batch_size", "batches")
        kdbench.check_non_negative(self, "eps", "mask_lambda")
        kdbench.check_range(self.name, "acc_threshold", self.acc_threshold, 0.0, 1.0)

    def score(self, model, calibration):
        predicted = self.noisy_predictions(model, calibration)
        accuracy = (predicted == calibration.labels).float().mean().item()
        most = int(torch.bincount(predicted, minlength=calibration.num_classes).argmax())
        return {"score": 1 - accuracy, "flagged_label": most if accuracy < self.acc_threshold else -1}

    def noisy_predictions(self, model, calibration) -> torch.Tensor:
        """Steps 1 to 3 on a copy of ``model``: the classes the noisy model gives the defender's
        images from their (1 − m)-masked features."""
        network = copy.deepcopy(model).to(memory_format=torch.channels_last).train().requires_grad_(False)
        generator = torch.Generator().manual_seed(self.seed)
        mask = self.feature_mask(network, calibration, generator)
        self.neuron_noise(network, calibration, generator)
        network.eval()
        with torch.no_grad():
            images = kdbench.to_float(calibration.images)
            return network.head((1 - mask) * network.features(images)).argmax(1)

    def sample(self, calibration, generator):
        """A batch drawn with replacement (the official ``RandomSampler(replacement=True)``)."""
        index = torch.randint(len(calibration.images), (self.batch_size,), generator=generator)
        index = index.to(calibration.images.device)
        return kdbench.to_float(calibration.images[index]), calibration.labels[index]

    def feature_mask(self, network, calibration, generator) -> torch.Tensor:
        """Step 1: the mask over one image's last feature map."""
        shape = network.features(kdbench.to_float(calibration.images[:1])).shape[1:]
        mask = torch.rand(shape, generator=generator).to(calibration.images.device).requires_grad_(True)
        optimizer = torch.optim.Adam([mask], lr=self.mask_lr)
        for _ in range(self.mask_epochs * self.batches):
            x, y = self.sample(calibration, generator)
            features = network.features(x)
            kept = F.cross_entropy(network.head(mask * features), y)
            rest = F.cross_entropy(network.head((1 - mask) * features), y)
            norm = mask.abs().sum()
            loss = kept - rest + self.mask_lambda * norm / norm.detach()  # the norm's value held fixed
            mask.data.clamp_(0, 1)  # as the official loop does, between the forward pass and its backward
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return mask.detach()

    def neuron_noise(self, network, calibration, generator):
        """Step 2: the adversarial noise, written into the batch-norm weights and biases."""
        norms = {name: module for name, module in network.named_modules()
                 if isinstance(module, nn.BatchNorm2d) and module.affine}
        for _ in range(self.batches):
            x, y = self.sample(calibration, generator)
            noise = {f"{name}.{part}": ((torch.rand(getattr(module, part).shape, generator=generator) * 2 - 1)
                                        * self.eps).to(x.device).requires_grad_(True)
                     for name, module in norms.items() for part in ("weight", "bias")}
            for _ in range(self.steps):
                scaled = {key: network.get_parameter(key) * (1 + n) for key, n in noise.items()}
                loss = -F.cross_entropy(functional_call(network, scaled, (x,)), y)
                grads = torch.autograd.grad(loss, list(noise.values()))
                with torch.no_grad():
                    for n, grad in zip(noise.values(), grads):
                        n -= self.eps / self.steps * grad.sign()
        with torch.no_grad():
            for key, n in noise.items():
                network.get_parameter(key).mul_(1 + n)


@kdbench.hookimpl
def register_defenses(register):
    register(BAN)
