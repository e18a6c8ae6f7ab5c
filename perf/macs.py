"""Multiply-accumulates per image of the architectures, against ResNet-18's, in one run.

The GPU-time estimates of the suites in README.md weigh each model's image-steps by these
ratios.  Counted by ``torch.utils.flop_counter`` on one image of the given size (a 32-px
CIFAR-like dataset by default: every family with its small-image stem), with the final map
side and the parameter count beside them.

    python perf/macs.py
    python perf/macs.py --size 224 --models resnet18,convnextv2_atto
"""
import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

import kdbench
from kdbench.plugins import PluginHost
from kdbench.registry import load_registry, spec, split_list

FAMILIES = ("resnet18,resnet34,resnet50,resnetv2_18,wide_resnet50_2,vgg16_bn,mobilenetv2_100,"
            "shufflenet_v2(width=2.0),densenet121,regnety_016,convnextv2_atto")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=FAMILIES, help="comma-separated architectures")
    parser.add_argument("--reference", default="resnet18")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    host = PluginHost(load_registry().plugins)
    info = kdbench.DatasetInfo("images", args.classes, 3, args.size, (0.5,) * 3, (0.25,) * 3,
                               tuple(map(str, range(args.classes))))
    reference = count(host, args.reference, info)[0]
    print(f"{'architecture':28} {'GMACs':>8} {'× ' + args.reference:>12} {'final map':>10} {'params (M)':>11}")
    for name in split_list(args.models):
        macs, side, params = count(host, name, info)
        print(f"{name:28} {macs / 1e9:8.3f} {macs / reference:12.3f} {side:>8}×{side:<1} {params / 1e6:11.1f}")


def count(host, text: str, info) -> tuple[int, int, int]:
    """(multiply-accumulates, final map side, parameters) of one image through the network."""
    entry = spec(text, "--models")
    network = host.create("architecture", entry.name, entry.kwargs)[1].network(info).eval()
    x = torch.rand(1, info.channels, info.size, info.size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(x)
    with torch.no_grad():
        side = network.features(x).shape[-1]
    return counter.get_total_flops() // 2, side, sum(p.numel() for p in network.parameters())


if __name__ == "__main__":
    main()
