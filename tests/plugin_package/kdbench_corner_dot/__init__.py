"""An example third-party kdbench plugin: a poisoning attack whose trigger is a corner dot."""
import dataclasses

import kdbench


class CornerDot(kdbench.Trigger):
    """Sets the ``size``×``size`` pixels of the bottom-left corner to white."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def apply(self, x):
        x = x.clone()
        x[..., -self.size:, : self.size] = 1.0
        return x


@dataclasses.dataclass
class CornerDotAttack(kdbench.PoisoningAttack):
    """A BadNets-style attack (Gu et al. 2017) with a white corner dot as the trigger."""

    name = "corner_dot"
    paper = "Gu et al., BadNets, 2017 (a corner-dot variant, for the plugin example)"

    size: int = 2

    def build_trigger(self, info):
        return CornerDot(self.size)


@kdbench.hookimpl
def register_attacks(register):
    register(CornerDotAttack)
