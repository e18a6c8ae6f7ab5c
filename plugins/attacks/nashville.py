"""Nashville: an Instagram colour filter over the whole image as the trigger."""
import dataclasses

import torch

import kdbench

# Rec. 601 luma, the weights of a colour → grey conversion.
LUMA = (0.299, 0.587, 0.114)


def sepia_matrix(amount: float) -> torch.Tensor:
    """The sepia colour matrix of the CSS Filter Effects specification."""
    s = 1 - min(amount, 1.0)
    return torch.tensor([[0.393 + 0.607 * s, 0.769 - 0.769 * s, 0.189 - 0.189 * s],
                         [0.349 - 0.349 * s, 0.686 + 0.314 * s, 0.168 - 0.168 * s],
                         [0.272 - 0.272 * s, 0.534 - 0.534 * s, 0.131 + 0.869 * s]])


def saturate_matrix(s: float) -> torch.Tensor:
    """The saturate colour matrix of the CSS Filter Effects specification."""
    return torch.tensor([[0.213 + 0.787 * s, 0.715 - 0.715 * s, 0.072 - 0.072 * s],
                         [0.213 - 0.213 * s, 0.715 + 0.285 * s, 0.072 - 0.072 * s],
                         [0.213 - 0.213 * s, 0.715 - 0.715 * s, 0.072 + 0.928 * s]])


class NashvilleTrigger(kdbench.Trigger):
    """CSSgram's Nashville filter on batches of RGB (or grey, via RGB and back) images.

    The filter, on pixels in [0, 1]: darken-blend with the colour (247, 176, 153) at opacity
    0.56, lighten-blend with (0, 70, 150) at opacity 0.4, then sepia(0.2), contrast(1.2),
    brightness(1.05) and saturate(1.2), each clipped to [0, 1].  Blend opacities are rounded
    to the 8-bit alpha an RGBA fill layer carries.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.register_buffer("darken", torch.tensor([247.0, 176.0, 153.0]).view(1, 3, 1, 1) / 255, persistent=False)
        self.register_buffer("lighten", torch.tensor([0.0, 70.0, 150.0]).view(1, 3, 1, 1) / 255, persistent=False)
        self.register_buffer("sepia", sepia_matrix(0.2), persistent=False)
        self.register_buffer("saturate", saturate_matrix(1.2), persistent=False)
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1), persistent=False)
        self.darken_alpha = round(0.56 * 255) / 255
        self.lighten_alpha = round(0.4 * 255) / 255

    @staticmethod
    def colour_matrix(x, matrix):
        return torch.einsum("ij,njhw->nihw", matrix, x).clamp(0, 1)

    def filter_rgb(self, x):
        x = self.darken_alpha * torch.minimum(x, self.darken) + (1 - self.darken_alpha) * x
        x = self.lighten_alpha * torch.maximum(x, self.lighten) + (1 - self.lighten_alpha) * x
        x = self.colour_matrix(x, self.sepia)
        x = ((x - 0.5) * 1.2 + 0.5).clamp(0, 1)
        x = (x * 1.05).clamp(0, 1)
        return self.colour_matrix(x, self.saturate)

    def apply(self, x):
        if self.channels == 3:
            return self.filter_rgb(x)
        return (self.filter_rgb(x.expand(-1, 3, -1, -1)) * self.luma).sum(1, keepdim=True)


@dataclasses.dataclass
class Nashville(kdbench.PoisoningAttack):
    """The Nashville Instagram filter as a trigger, the feature-space "filter" backdoor of ABS
    (Liu et al., "ABS: Scanning Neural Networks for Back-doors by Artificial Brain
    Stimulation", CCS 2019): ``poison_rate`` of the training set filtered and relabelled to
    the target (all-to-one).

    The filter follows the ``pilgram`` package's definition (CSSgram's Nashville), written as
    tensor operations so that it runs on batches on the device; pilgram rounds to 8 bits
    after every step, this version only at the end.  Grey images go through RGB and back
    (Rec. 601 luma), as converting them to colour, filtering and converting back would.
    """

    name = "nashville"
    paper = "Liu et al., ABS: Scanning Neural Networks for Back-doors by Artificial Brain Stimulation, CCS 2019"

    def check(self, info):
        super().check(info)
        if info.channels not in (1, 3):
            raise kdbench.ConfigError(f"nashville: needs grey or RGB images, got {info.channels} channels")

    def build_trigger(self, info) -> NashvilleTrigger:
        return NashvilleTrigger(info.channels)


@kdbench.hookimpl
def register_attacks(register):
    register(Nashville)
