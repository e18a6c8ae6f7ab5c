"""What a leaderboard folder is: its suite, description, reproducing command and date.

``kdbench run`` writes them to ``suite.json`` beside the CSVs; a folder without one (published
before it existed) is described by the registry suite of the folder's name, if there is one.
"""
import dataclasses
import datetime
import json
from pathlib import Path

import pandas as pd

from ..registry import Suite, load_registry

ABOUT = "suite.json"


@dataclasses.dataclass
class About:
    suite: str
    description: str
    command: str
    date: str  # the UTC day the run finished, YYYY-MM-DD; "" when unknown
    definition: dict

    def devices(self, distillation: pd.DataFrame) -> str:
        found = sorted(str(d) for d in distillation.get("device", pd.Series(dtype=object)).dropna().unique())
        return ", ".join(found) or "–"


def write_about(folder: Path, suite: Suite, command: str):
    """Record the suite a folder's CSVs came from and the command that reproduces them."""
    about = About(suite.name, suite.description, command or f"kdbench run {suite.name}",
                  datetime.datetime.now(datetime.timezone.utc).date().isoformat(), suite.definition())
    (Path(folder) / ABOUT).write_text(json.dumps(dataclasses.asdict(about), indent=1, sort_keys=True) + "\n")


def read_about(folder: Path) -> About:
    folder = Path(folder)
    if (folder / ABOUT).exists():
        return About(**json.loads((folder / ABOUT).read_text()))
    registry = load_registry()
    suite = next((s for s in registry.suites.values() if s.leaderboard == folder.name), None)
    if suite is None:
        return About(folder.name, "", "", "", {})
    return About(suite.name, suite.description, f"kdbench run {suite.name}", "", suite.definition())
