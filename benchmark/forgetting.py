"""Forgetting events of each training sample (Toneva et al., "An Empirical Study of Example
Forgetting during Deep Neural Network Learning", ICLR 2019), counted while a model trains."""
import torch

from .network import Outputs
from .training import Batch


class ForgettingEvents:
    """Per-sample counts of forgetting events, as ``train``'s ``on_batch`` hook of one learner.

    A sample is forgotten when it is drawn and misclassified after it was classified
    correctly the last time it was drawn.  As BackWeak's official trainer counts them
    (``src/modules/simple_normal_train.py``): the predictions of the augmented batch in
    training mode, before the optimiser's step; every sample starts as not yet correct, so
    the first epoch can only set the record.
    """

    def __init__(self, count: int, device):
        self.counts = torch.zeros(count, dtype=torch.int32, device=device)
        self.correct = torch.zeros(count, dtype=torch.bool, device=device)

    def __call__(self, outputs: Outputs, batch: Batch):
        correct = outputs.logits.detach().argmax(1) == batch.labels
        self.counts[batch.indices] += (self.correct[batch.indices] & ~correct).int()
        self.correct[batch.indices] = correct
