"""A dataset whose classes are not the digits': the digits' images under ten letters' names."""
import dataclasses

import kdbench
from kdbench_plugins.datasets.digits import Digits


@dataclasses.dataclass
class Letters(Digits):
    name = "letters"
    paper = "none: a test fixture"

    def load(self, cache_dir) -> kdbench.ImageData:
        data = super().load(cache_dir)
        info = dataclasses.replace(data.info, name=self.name, class_names=tuple("abcdefghij"))
        return dataclasses.replace(data, info=info)


@kdbench.hookimpl
def register_datasets(register):
    register(Letters)
