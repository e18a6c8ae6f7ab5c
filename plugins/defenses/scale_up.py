"""SCALE-UP: a triggered input keeps its prediction when its pixel values are amplified."""
import dataclasses

import torch

import kdbench

CALIBRATIONS = ("global", "per_class", "none")


@dataclasses.dataclass
class ScaleUp(kdbench.InputDetector):
    """SCALE-UP (Guo, Li, Chen, Guo, Sun & Liu, "SCALE-UP: An Efficient Black-box
    Input-level Backdoor Detection via Analyzing Scaled Prediction Consistency", ICLR 2023).
    Every input is amplified pixel-wise by each odd factor n = 3, 5, …, ``max_scale`` (and
    clipped to [0, 1]); its scaled prediction consistency SPC is the fraction of amplified
    copies predicted as the input itself is (higher = more suspicious).

    The default follows the authors' implementation in BackdoorBox (``core/defenses/SCALE_UP.py``,
    to which the authors' repository JunfengGo/SCALE-UP sends its users): with a clean
    validation set, the SPC is standardised with ONE mean μ and (unbiased) standard deviation
    σ of the SPC of the defender's clean images, score = (SPC − μ)/σ (``calibration`` =
    ``global``).  The statistics are taken on the defender's images the model classifies
    correctly, where agreeing with the prediction is agreeing with the label, as BackdoorBox
    counts it.  Scale set {3, 5, 7, 9, 11}: ``max_scale`` = 11.

    ``calibration`` = ``per_class`` is the paper's data-limited formula: the mean and
    standard deviation of the SPC of the correctly classified clean images of the input's
    predicted class, score = (SPC − μ_ŷ)/σ_ŷ (kdbench's default before version 2); a class
    without such images takes the statistics of all of them.  ``none`` is the data-free
    score, the SPC itself, which ranks inputs as ``global`` does.  The authors' repository
    scores that data-free SPC over every factor 1, 2, …, 11 (``torch_model_wrapper.py``,
    ``test.py``), the unscaled copy included.

    Deviation: σ is floored at the SPC's resolution 1/(number of factors), so that clean
    images that all agree (σ = 0) do not divide by zero.
    """

    name = "scale_up"
    paper = "Guo et al., SCALE-UP: An Efficient Black-box Input-level Backdoor Detection via Analyzing Scaled Prediction Consistency, ICLR 2023"
    version = "2"

    max_scale: int = 11
    calibration: str = "global"
    batch_size: int = 1024

    def validate(self):
        if self.max_scale < 3 or self.batch_size < 1:
            raise kdbench.ConfigError(f"scale_up: max_scale must be ≥ 3 and batch_size ≥ 1, got {self.max_scale}, {self.batch_size}")
        if self.calibration not in CALIBRATIONS:
            raise kdbench.ConfigError(f"scale_up: calibration must be one of {', '.join(CALIBRATIONS)}, got {self.calibration!r}")

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
        if self.calibration == "none":
            return spc
        clean_spc, clean_predicted = self.consistency(model, calibration.images)
        correct = clean_predicted == calibration.labels
        if correct.sum() < 2:
            raise ValueError("scale_up needs at least two clean images the model classifies correctly")
        clean_spc, clean_predicted = clean_spc[correct], clean_predicted[correct]
        floor = 1 / len(self.scales)
        if self.calibration == "global":
            return (spc - clean_spc.mean()) / clean_spc.std().clamp_min(floor)
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
