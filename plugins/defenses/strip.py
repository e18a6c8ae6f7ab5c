"""STRIP: triggered inputs keep their prediction when other images are superimposed."""
import dataclasses

import torch

import kdbench


@dataclasses.dataclass
class Strip(kdbench.InputDetector):
    """STRIP (Gao, Xu, Wang, Chen, Ranasinghe & Nepal, "STRIP: A Defence Against Trojan
    Attacks on Deep Neural Networks", ACSAC 2019).  Each input is superimposed with ``n``
    clean images drawn from the defender's calibration set (pixel-wise sum, saturated, as
    the authors' code does with ``addWeighted(1, 1)``); the mean Shannon entropy of the
    model's predictions over the copies is low for a triggered input, whose trigger
    survives the overlay.  Score = −entropy (higher = more suspicious).  The paper uses
    n = 100."""

    name = "strip"
    paper = "Gao et al., STRIP: A Defence Against Trojan Attacks on Deep Neural Networks, ACSAC 2019"

    n: int = 100
    seed: int = 0
    batch_size: int = 4096

    def validate(self):
        if self.n < 1:
            raise kdbench.ConfigError(f"strip: n must be at least 1, got {self.n}")

    @torch.no_grad()
    def score(self, model, images, calibration):
        model.eval()
        generator = torch.Generator().manual_seed(self.seed)
        overlays = kdbench.to_float(calibration.images)
        images = kdbench.to_float(images)
        per_chunk = max(1, self.batch_size // self.n)
        scores = []
        for chunk in images.split(per_chunk):
            picks = torch.randint(len(overlays), (len(chunk), self.n), generator=generator).to(images.device)
            blended = (chunk[:, None] + overlays[picks]).clamp(0, 1).flatten(0, 1)
            probs = kdbench.logits(model, blended, self.batch_size).softmax(1)
            entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1).view(len(chunk), self.n).mean(1)
            scores.append(-entropy)
        return torch.cat(scores)


@kdbench.hookimpl
def register_defenses(register):
    register(Strip)
