"""SCALE-UP: a triggered input keeps its prediction when its pixel values are amplified."""
import dataclasses

import torch

import kdbench


@dataclasses.dataclass
class ScaleUp(kdbench.InputDetector):
    """SCALE-UP (Guo, Li, Chen, Guo, Sun & Liu, "SCALE-UP: An Efficient Black-box
    Input-level Backdoor Detection via Analyzing Scaled Prediction Consistency", ICLR 2023).
    Every input is amplified pixel-wise by each odd factor n = 3, 5, …, ``max_scale`` (and
    clipped to [0, 1]); its scaled prediction consistency SPC is the fraction of amplified
    copies predicted as the input itself is.  In the paper's data-limited setting (``per_class``,
    the default) the SPC is standardised with the mean and standard deviation of the SPC of
    the defender's clean images predicted as the same class: score = (SPC − μ_ŷ) / σ_ŷ,
    higher = more suspicious.  ``per_class`` = false is the paper's data-free setting,
    score = SPC.  The paper's scale set is {3, 5, 7, 9, 11}: ``max_scale`` = 11.

    Deviations: a class that none of the defender's images is predicted as is standardised
    with the statistics of all of them, and σ is floored at the SPC's resolution
    1/(number of factors), so that a class whose clean copies all agree does not divide by
    zero."""

    name = "scale_up"
    paper = "Guo et al., SCALE-UP: An Efficient Black-box Input-level Backdoor Detection via Analyzing Scaled Prediction Consistency, ICLR 2023"

    max_scale: int = 11
    per_class: bool = True
    batch_size: int = 1024

    def validate(self):
        if self.max_scale < 3 or self.batch_size < 1:
            raise kdbench.ConfigError(f"scale_up: max_scale must be ≥ 3 and batch_size ≥ 1, got {self.max_scale}, {self.batch_size}")

    @property
    def scales(self) -> range:
        return range(3, self.max_scale + 1, 2)

    def consistency(self, model, images):
        """(SPC, predicted label) of every image."""
        predicted = kdbench.predict(model, images, self.batch_size)
        agree = torch.zeros(len(images), device=predicted.device)
        for factor in self.scales:
            amplify = lambda x, factor=factor: (x * factor).clamp(0, 1)  # noqa: E731
            agree += kdbench.predict(model, images, self.batch_size, amplify) == predicted
        return agree / len(self.scales), predicted

    def score(self, model, images, calibration):
        spc, predicted = self.consistency(model, images)
        if not self.per_class:
            return spc
        clean_spc, clean_predicted = self.consistency(model, calibration.images)
        floor = 1 / len(self.scales)
        mean = torch.full((calibration.num_classes,), clean_spc.mean().item(), device=spc.device)
        std = torch.full_like(mean, max(clean_spc.std(unbiased=False).item(), floor))
        for label in clean_predicted.unique():
            members = clean_spc[clean_predicted == label]
            mean[label] = members.mean()
            std[label] = members.std(unbiased=False).clamp_min(floor)
        return (spc - mean[predicted]) / std[predicted]


@kdbench.hookimpl
def register_defenses(register):
    register(ScaleUp)
