"""What a network computes on the way to its logits, for the methods that read it.

Teacher and student may be any two timm-style networks, of different families, widths and
depths, so nothing about their features is assumed beyond what a probe batch shows:

- ``embedding`` and ``penultimate``: the vector a network's classifier reads (timm's
  ``forward_head(pre_logits=True)``), for methods on the penultimate representation (CRD,
  RKD, PKT; activation clustering, spectral signatures);
- ``stage_indices``: which of ``forward_intermediates``' maps are stage outputs (a stem's
  output left out);
- ``stage_at`` and ``matched_stages``: stages of networks with different numbers of stages
  paired by relative depth, the output of stage i of n lying at depth (i + 1) / n;
- ``match_size``: two feature maps brought to one spatial size by average-pooling the larger;
- ``require_maps``: a one-line ``ConfigError`` unless a method's inputs are N×C×H×W maps.
"""
import torch
import torch.nn.functional as F

from .data import to_float
from .errors import ConfigError
from .network import Network
from .training import channels_last, device_of, inference_batch

# The module timm records (``feature_info``) for a stem's output, or the first part of its
# name: ResNet's ``act1``, ResNetV2's and RegNet's ``stem``, DenseNet's ``features.norm0``,
# the ``conv1``/``bn1``/``conv_stem`` of others.
STEM_MODULES = frozenset({"act1", "bn1", "conv1", "conv_stem", "stem", "features.norm0"})


def embedding(network: Network, features: torch.Tensor) -> torch.Tensor:
    """The network's penultimate representation (B×D) from its last feature map."""
    return network.body.forward_head(features, pre_logits=True).flatten(1)


@torch.no_grad()
def penultimate(network: Network, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Float32 penultimate representations of uint8 or float images, batch by batch, on
    the network's device, channels_last (bf16 autocast on CUDA)."""
    network.eval()
    device = device_of(network, images)
    out = []
    with channels_last(network):
        for chunk in images.split(inference_batch(device, batch_size)):
            x = to_float(chunk.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
                out.append(embedding(network, network.features(x)).float())
    return torch.cat(out)


def stage_indices(network: Network, count: int) -> list[int]:
    """The indices, among the ``count`` maps ``forward_intermediates`` returns, of the outputs
    of the network's stages.  timm lists a stem's output first for some families (a ResNet's
    ``act1``, a DenseNet's ``features.norm0``); it is left out.  A body without timm's
    ``feature_info`` (the small CNN) has stages only."""
    info = getattr(network.body, "feature_info", None)
    if not isinstance(info, list) or len(info) != count:
        return list(range(count))
    return [i for i, entry in enumerate(info)
            if entry["module"] not in STEM_MODULES and entry["module"].split(".")[0] not in STEM_MODULES]


def stage_at(count: int, depth: float) -> int:
    """The index of the stage, of ``count``, whose output lies nearest relative depth ``depth``
    (ties go to the deeper stage)."""
    return min(range(count), key=lambda i: (round(abs((i + 1) / count - depth), 9), -i))


def matched_stages(student_count: int, teacher_count: int) -> list[tuple[int, int]]:
    """(student stage, teacher stage) pairs: every stage of the network with fewer stages,
    each with the other network's stage nearest to it in relative depth."""
    if student_count <= teacher_count:
        return [(i, stage_at(teacher_count, (i + 1) / student_count)) for i in range(student_count)]
    return [(stage_at(student_count, (j + 1) / teacher_count), j) for j in range(teacher_count)]


def pool_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` (…×H×W) average-pooled to ``size``, or ``x`` itself when it already has that size."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.adaptive_avg_pool2d(x, size)


def common_size(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    """The spatial size both maps can be pooled to: the smaller height and width."""
    return min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])


def match_size(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both maps at their common size (the larger one average-pooled)."""
    size = common_size(a, b)
    return pool_to(a, size), pool_to(b, size)


def require_maps(method: str, **maps: torch.Tensor):
    """Raise a ConfigError unless every named tensor is an N×C×H×W feature map."""
    for role, tensor in maps.items():
        if tensor.dim() != 4:
            raise ConfigError(
                f"{method}: needs N×C×H×W feature maps, but the {role} gives shape {tuple(tensor.shape)}")
