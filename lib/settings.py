"""Reading settings from layered sources, collecting every problem at once.

The gateway and each provider read their settings through :class:`Settings`,
which merges command line > environment > dotenv file (the caller decides the
layers), supports ``<KEY>_FILE`` for secrets and records problems instead of
stopping at the first one, so start-up can report every mistake in one message.

A :class:`Settings` also records every key asked of it (``asked``), so the keys
that code reads are known from the code itself: :func:`unknown_keys` names the
keys of a settings file that nothing reads, with the closest known name
("unknown setting BUILTIN_NSS: did you mean BUILTIN_NS?").
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import TypeVar

from lib.names import InvalidName, normalize_name

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(Exception):
    """The configuration has one or more problems; ``problems`` lists them all."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class Settings:
    """A read-only view over merged settings that records problems as it reads."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.problems: list[str] = []
        # Not errors, but worth saying at start-up (and errors under --check-config
        # where the caller decides so).
        self.warnings: list[str] = []
        # Every key asked for, set or not: what the code reading these settings knows.
        self.asked: set[str] = set()
        # The keys that came from a settings file, and which one: those, unlike the
        # environment (which holds everything), can be checked for unknown keys.
        self.file_keys: dict[str, str] = {}
        # The keys read as secrets (:meth:`secret`): the files that hold them must be private,
        # and no caller may store or show their values.
        self.secret_keys: set[str] = set()

    def problem(self, message: str) -> None:
        """Record a problem to report at the end of configuration (once: the gateway
        and its provider may read the same setting)."""
        if message not in self.problems:
            self.problems.append(message)

    def warn(self, message: str) -> None:
        """Record something to say at start-up that does not stop it (once)."""
        if message not in self.warnings:
            self.warnings.append(message)

    def raise_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)

    def _raw(self, key: str) -> str | None:
        self.asked.add(key)
        return self._values.get(key)

    def keys_with_prefix(self, prefix: str) -> list[str]:
        """The keys set to something that start with *prefix*, sorted (for settings
        named after something else, such as dns-lexicon's ``LEXICON_<PROVIDER>_*``)."""
        return sorted(k for k, v in self._values.items() if k.startswith(prefix) and v.strip())

    def has(self, key: str) -> bool:
        return bool((self._raw(key) or "").strip())

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of *key* with surrounding blanks removed; empty counts as unset."""
        value = self._raw(key)
        if value is None or not value.strip():
            return default
        return value.strip()

    def secret(self, key: str) -> str | None:
        """A secret from *key* or from the file named by ``<key>_FILE``.

        The file's trailing newline is dropped; other whitespace is kept, since
        it may be part of the secret.
        """
        self.secret_keys.add(key)
        direct = self._raw(key) or None
        file_name = self.get(f"{key}_FILE")
        if direct is not None and file_name is not None:
            self.problem(f"{key} and {key}_FILE are both set; keep one")
            return None
        if file_name is None:
            return direct
        try:
            with open(file_name, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            self.problem(f"{key}_FILE: cannot read {file_name}: {exc.strerror}")
            return None
        except UnicodeDecodeError:
            self.problem(f"{key}_FILE: {file_name} is not UTF-8 text")
            return None
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        if not text:
            self.problem(f"{key}_FILE: {file_name} is empty")
            return None
        return text

    def require(self, key: str, why: str = "") -> str:
        value = self.get(key)
        if value is None:
            self.problem(f"{key} is required" + (f": {why}" if why else ""))
            return ""
        return value

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self._raw(key)
        if value is None:
            return default
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        self.problem(f"{key}={value!r} is not a boolean (use 1/0, yes/no, true/false)")
        return default

    def integer(self, key: str, default: int, minimum: int, maximum: int) -> int:
        value = self.get(key)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            self.problem(f"{key}={value!r} is not a whole number")
            return default
        if not minimum <= number <= maximum:
            self.problem(f"{key}={number} is out of range ({minimum} to {maximum})")
            return default
        return number

    def duration(self, key: str, default: float, minimum: float, maximum: float) -> float:
        """Seconds, from ``90``, ``1.5``, ``250ms``, ``30s``, ``5m``, ``1h`` or ``1d``."""
        value = self.get(key)
        if value is None:
            return default
        match = _DURATION.fullmatch(value)
        if not match:
            self.problem(f"{key}={value!r} is not a duration (e.g. 30, 30s, 5m, 1h)")
            return default
        seconds = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
        if not minimum <= seconds <= maximum:
            self.problem(f"{key}={value} is out of range ({minimum:g}s to {maximum:g}s)")
            return default
        return seconds

    def zone(self, key: str) -> str | None:
        """The zone *key* names, written as the gateway writes every name (lower case,
        IDNA, no trailing dot) so that names under it are found to be under it; None
        when unset, or with a problem recorded when it is no zone name (a wildcard, say)."""
        raw = self.get(key)
        if raw is None:
            return None
        try:
            if raw.startswith("*"):
                # normalize_name drops a leading "*." (a certificate identifier's): a
                # zone written that way is a mistake, not the zone under it.
                raise InvalidName("is a wildcard")
            return normalize_name(raw)
        except InvalidName as exc:
            self.problem(f"{key}={raw!r} is not a zone name: it {exc}")
            return None

    def choice(self, key: str, choices: Mapping[str, T], default: T) -> T:
        """Map a case-insensitive word to a value; unknown words are a problem."""
        value = self.get(key)
        if value is None:
            return default
        try:
            return choices[value.lower()]
        except KeyError:
            names = ", ".join(sorted({k for k in choices if k}))
            self.problem(f"{key}={value!r} is not one of: {names}")
            return default

    def items(self, key: str) -> list[str]:
        """A comma- or blank-separated list."""
        value = self.get(key)
        if value is None:
            return []
        return [item for item in re.split(r"[\s,]+", value) if item]


def unknown_keys(
    keys: Iterable[str], known: Collection[str], prefixes: Iterable[str] = ()
) -> list[tuple[str, str | None]]:
    """The *keys* that are neither *known* nor start with one of *prefixes*, each with the
    closest known name (None when nothing is close): a misspelled setting is otherwise
    silently ignored."""
    starts = tuple(prefixes)
    unknown = [k for k in keys if k not in known and not (starts and k.startswith(starts))]
    if not unknown:
        return []
    import difflib  # only when there is something to report: the hook starts for each call

    result: list[tuple[str, str | None]] = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
        result.append((key, close[0] if close else None))
    return result


def unknown_message(key: str, suggestion: str | None, where: str) -> str:
    """How to report one of :func:`unknown_keys`'s results found in the file *where*."""
    hint = f"did you mean {suggestion}?" if suggestion else "nothing reads it"
    return f"unknown setting {key} in {where}: {hint}"
