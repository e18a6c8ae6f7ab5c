"""The declarative registry: which plugin modules load, and the named suites.

A user's registry file is read on top of the default one: its plugin modules are added,
its suites added or replaced.
"""
import dataclasses
import re
import sys
from pathlib import Path

import yaml

from .errors import ConfigError, unknown_name

SUITE_KEYS = {"description", "dataset", "victim_dataset", "teachers", "students", "attacks", "distillers",
              "defenses", "seeds", "budget", "leaderboard"}
BASELINE = "none"  # the attack name of the clean baseline
BUDGET_DEFAULTS = {"teacher_epochs": 20, "student_epochs": 20, "batch_size": 256, "lr": 0.1,
                   "attacker_fraction": 0.5, "defender_fraction": 0.1, "max_test": 0, "compile": False,
                   "device_data_fraction": 0.5}


@dataclasses.dataclass(frozen=True)
class Spec:
    """A component named in a suite: its name and the options it overrides."""

    name: str
    options: tuple = ()  # sorted (key, value) pairs

    @property
    def kwargs(self) -> dict:
        return dict(self.options)

    def __str__(self):
        if not self.options:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={v}" for k, v in self.options) + ")"


@dataclasses.dataclass
class Suite:
    name: str
    description: str
    dataset: Spec
    teachers: list
    students: list
    attacks: list
    distillers: list
    defenses: list
    seeds: list
    budget: dict
    leaderboard: str
    victim_dataset: Spec | None = None  # where the victim distils, when not on the dataset's victim half

    def definition(self) -> dict:
        """The suite as a registry entry (``suites: {name: definition}``) that reproduces it."""
        labels = lambda specs: [str(s) for s in specs]  # noqa: E731
        definition = {"description": self.description, "dataset": str(self.dataset),
                      "teachers": labels(self.teachers), "students": labels(self.students),
                      "attacks": labels(self.attacks), "distillers": labels(self.distillers),
                      "defenses": labels(self.defenses), "seeds": list(self.seeds), "budget": dict(self.budget),
                      "leaderboard": self.leaderboard}
        if self.victim_dataset is not None:
            definition["victim_dataset"] = str(self.victim_dataset)
        return definition

    def override(self, **axes) -> "Suite":
        """A copy with the given axes (lists of specs, seeds, budget entries) replaced."""
        budget = dict(self.budget)
        for key in list(axes):
            if key in BUDGET_DEFAULTS:
                value = axes.pop(key)
                if value is not None:
                    budget[key] = value
        changes = {k: v for k, v in axes.items() if v is not None}
        return dataclasses.replace(self, budget=budget, **changes)


@dataclasses.dataclass
class Registry:
    plugins: list
    suites: dict
    source: str

    def suite(self, name: str) -> Suite:
        if name not in self.suites:
            raise unknown_name("suite", name, self.suites)
        return self.suites[name]


def default_registry_path() -> Path:
    """The registry beside the source tree (editable installs, checkouts) or the installed copy."""
    beside = Path(__file__).resolve().parent.parent / "registry.yaml"
    if beside.exists():
        return beside
    return Path(sys.prefix) / "share" / "kdbench" / "registry.yaml"


def load_registry(user_file: str | Path | None = None) -> Registry:
    base = _read(default_registry_path())
    plugins, suites = _plugins(base, "default registry"), _suites(base, "default registry")
    source = str(default_registry_path())
    if user_file is not None:
        user = _read(Path(user_file))
        plugins += [p for p in _plugins(user, str(user_file)) if p not in plugins]
        suites.update(_suites(user, str(user_file)))
        source = str(user_file)
    return Registry(plugins, suites, source)


def _read(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"registry file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"registry {path} is not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"registry {path} must be a mapping with 'plugins' and 'suites'")
    unknown = set(data) - {"plugins", "suites"}
    if unknown:
        raise ConfigError(f"registry {path}: unknown key {', '.join(sorted(unknown))} (expected plugins, suites)")
    return data


def _plugins(data: dict, where: str) -> list:
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError(f"{where}: 'plugins' must be a list of module import paths")
    return list(plugins)


def _suites(data: dict, where: str) -> dict:
    suites = data.get("suites") or {}
    if not isinstance(suites, dict):
        raise ConfigError(f"{where}: 'suites' must be a mapping of suite names to suites")
    return {name: parse_suite(name, body, where) for name, body in suites.items()}


def parse_suite(name: str, body, where: str = "registry") -> Suite:
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: suite '{name}' must be a mapping")
    unknown = set(body) - SUITE_KEYS
    if unknown:
        raise ConfigError(f"{where}: suite '{name}' has unknown key {', '.join(sorted(unknown))}")
    for required in ("dataset", "teachers", "attacks", "distillers"):
        if required not in body:
            raise ConfigError(f"{where}: suite '{name}' is missing '{required}'")
    budget = dict(BUDGET_DEFAULTS)
    given = body.get("budget") or {}
    if not isinstance(given, dict) or set(given) - set(BUDGET_DEFAULTS):
        raise ConfigError(f"{where}: suite '{name}' budget keys must be among {', '.join(BUDGET_DEFAULTS)}")
    budget.update(given)
    check_budget(budget, f"suite '{name}'")
    seeds = body.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"{where}: suite '{name}' seeds must be a list of integers")
    teachers = specs(body["teachers"], f"suite '{name}' teachers")
    return Suite(
        name=name,
        description=str(body.get("description", "")),
        dataset=spec(body["dataset"], f"suite '{name}' dataset"),
        teachers=teachers,
        students=specs(body.get("students", body["teachers"]), f"suite '{name}' students"),
        attacks=specs(body["attacks"], f"suite '{name}' attacks"),
        distillers=specs(body["distillers"], f"suite '{name}' distillers"),
        defenses=specs(body.get("defenses", []), f"suite '{name}' defenses"),
        seeds=seeds,
        budget=budget,
        leaderboard=str(body.get("leaderboard", name)),
        victim_dataset=spec(body["victim_dataset"], f"suite '{name}' victim_dataset") if body.get("victim_dataset")
        else None,
    )


def check_budget(budget: dict, where: str):
    for key in ("teacher_epochs", "student_epochs", "batch_size", "max_test"):
        if not isinstance(budget[key], int) or budget[key] < (0 if key == "max_test" else 1):
            raise ConfigError(f"{where}: budget {key} must be a positive integer, got {budget[key]!r}")
    for key in ("attacker_fraction", "defender_fraction"):
        if not isinstance(budget[key], (int, float)) or not 0 < budget[key] < 1:
            raise ConfigError(f"{where}: budget {key} must be in (0, 1), got {budget[key]!r}")
    fraction = budget["device_data_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise ConfigError(f"{where}: budget device_data_fraction must be in [0, 1], got {fraction!r}")
    if not isinstance(budget["lr"], (int, float)) or budget["lr"] <= 0:
        raise ConfigError(f"{where}: budget lr must be a positive number, got {budget['lr']!r}")
    if not isinstance(budget["compile"], bool):
        raise ConfigError(f"{where}: budget compile must be true or false, got {budget['compile']!r}")


def specs(value, where: str) -> list:
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list) or not value and "defenses" not in where:
        raise ConfigError(f"{where} must be a non-empty list")
    return [spec(item, where) for item in value]


CALL = re.compile(r"^([A-Za-z0-9_:./-]+)\((.*)\)$")


def spec(item, where: str) -> Spec:
    """``name``, ``name(key=value,...)`` or ``{name: ..., key: value}``."""
    if isinstance(item, dict):
        if "name" not in item:
            raise ConfigError(f"{where}: a component given as a mapping needs a 'name' key")
        options = {k: v for k, v in item.items() if k != "name"}
        return Spec(str(item["name"]), tuple(sorted(options.items())))
    if not isinstance(item, str) or not item.strip():
        raise ConfigError(f"{where}: expected a component name, got {item!r}")
    item = item.strip()
    call = CALL.match(item)
    if not call:
        if "(" in item or ")" in item:
            raise ConfigError(f"{where}: cannot read '{item}' (expected name or name(key=value,...))")
        return Spec(item)
    options = {}
    for part in filter(None, (p.strip() for p in call.group(2).split(","))):
        if "=" not in part:
            raise ConfigError(f"{where}: option '{part}' of {call.group(1)} must be key=value")
        key, value = part.split("=", 1)
        options[key.strip()] = yaml.safe_load(value)
    return Spec(call.group(1), tuple(sorted(options.items())))


def split_list(text: str) -> list:
    """Split a command-line list at the commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]
