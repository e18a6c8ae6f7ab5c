"""The one error type that reaches the user as a one-line message and exit code 2."""
import difflib

import click


class ConfigError(click.ClickException):
    """Bad input: an unknown name, a malformed registry, an impossible option."""

    exit_code = 2


def unknown_name(kind: str, name: str, known) -> ConfigError:
    """A ConfigError for an unknown component name, with the close matches suggested."""
    close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(known)) or 'none'}"
    return ConfigError(f"unknown {kind} '{name}'{hint}")
