"""A plugin whose attack always fails, to show that a failing cell does not stop the others."""
import dataclasses

import kdbench


@dataclasses.dataclass
class AlwaysFails(kdbench.PoisoningAttack):
    name = "always_fails"
    paper = "none: a test fixture"

    def build_trigger(self, info):
        raise RuntimeError("this attack always fails")


@kdbench.hookimpl
def register_attacks(register):
    register(AlwaysFails)
