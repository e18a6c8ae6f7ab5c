"""kdbench.features, the feature access shared by distillers and defenses."""
import torch

import kdbench


def test_penultimate_is_what_the_classifier_reads(bench):
    """For the small CNN: the spatial mean of the last feature map, batch by batch."""
    torch.manual_seed(0)
    network = bench.resolve("architecture", "small_cnn(width=4)").component.network(bench.data.info).eval()
    images = bench.data.test_images[:5]
    with torch.no_grad():
        expected = network.features(kdbench.to_float(images)).mean((2, 3))
    assert torch.allclose(kdbench.penultimate(network, images, batch_size=2), expected, atol=1e-6)
