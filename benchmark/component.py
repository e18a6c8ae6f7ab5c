"""The base of every pluggable component: a dataclass whose fields are its options."""
import dataclasses
import typing
from typing import ClassVar

from .errors import ConfigError


@dataclasses.dataclass
class Component:
    """A registered, configurable piece of the benchmark.

    Subclasses are dataclasses: each field is an option with the paper's default, set
    from the suite (``{name: blended, alpha: 0.1}``) or the command line.  ``name`` is
    the registry key, ``paper`` the citation ``kdbench plugins`` shows, ``version`` goes
    into every cache key, so bumping it invalidates what was computed with the old code.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    version: ClassVar[str] = "1"

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Raise ``ConfigError`` for an impossible option value (one line, names the option)."""

    def options(self) -> dict:
        return dataclasses.asdict(self)

    def label(self) -> str:
        """How the component appears in a leaderboard: its name, plus options that differ from the defaults."""
        defaults = type(self)()
        changed = {k: v for k, v in self.options().items() if getattr(defaults, k) != v}
        if not changed:
            return self.name
        return self.name + "(" + ",".join(f"{k}={v}" for k, v in sorted(changed.items())) + ")"

    @classmethod
    def create(cls, options: dict):
        """Instantiate from user options, turning a wrong option name or type into a ``ConfigError``."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ConfigError(
                f"{cls.name}: unknown option {', '.join(unknown)} (options: {', '.join(sorted(fields)) or 'none'})"
            )
        typed = {}
        for field in dataclasses.fields(cls):
            if field.name in options:
                typed[field.name] = _coerce(cls.name, field, options[field.name])
        return cls(**typed)


def _scalar_type(annotation):
    """The scalar type an option is declared with (``float`` for ``float | None``), or None."""
    if isinstance(annotation, str):
        return {"int": int, "float": float, "bool": bool, "str": str}.get(annotation.removesuffix(" | None"))
    members = [member for member in typing.get_args(annotation) if member is not type(None)]
    if len(members) == 1:
        annotation = members[0]
    return annotation if isinstance(annotation, type) else None


def _coerce(owner, field, value):
    """Convert command-line strings and YAML scalars to the field's declared scalar type."""
    kind = _scalar_type(field.type)
    if value is None and field.default is None:
        return value
    if kind is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    try:
        if kind is bool and isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}: option {field.name} must be {kind.__name__}, got {value!r}") from None


def check_range(owner: str, option: str, value: float, low: float, high: float):
    """One-line ConfigError unless ``low <= value <= high``."""
    if not low <= value <= high:
        raise ConfigError(f"{owner}: {option} must be in [{low}, {high}], got {value}")


def check_non_negative(component: Component, *options: str):
    """One-line ConfigError unless each named option of ``component`` is at least zero."""
    for option in options:
        if getattr(component, option) < 0:
            raise ConfigError(f"{component.name}: {option} must be ≥ 0, got {getattr(component, option)}")


def check_positive(component: Component, *options: str):
    """One-line ConfigError unless each named option of ``component`` is above zero."""
    for option in options:
        if getattr(component, option) <= 0:
            raise ConfigError(f"{component.name}: {option} must be positive, got {getattr(component, option)}")
