"""The representation the training-data detectors cluster: the last hidden layer."""
import torch

import kdbench


@torch.no_grad()
def penultimate(model: kdbench.Network, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Float32 activations of the layer before the classifier (timm's ``pre_logits``), on the device."""
    model.eval()
    out = []
    for chunk in images.split(batch_size):
        x = kdbench.to_float(chunk)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
            out.append(model.body.forward_head(model.features(x), pre_logits=True).float().flatten(1))
    return torch.cat(out)
