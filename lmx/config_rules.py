"""The valid values of a config field: its type and range, or the registry its names come from.

`lmx.config_lib.FIELDS` gives every leaf of the base config one rule, written as one short expression:

    integer(">= 1")            an int >= 1                  real("[0, 1)")   a float in [0, 1)
    integer(">= 1", also=-1)   -1 or an int >= 1            real("> 0")      a float > 0 (ints are accepted)
    BOOLEAN, TEXT              a bool, any string           one_of("stop", "skip")
    registered("lmx.optim:OPTIMIZERS")   a key of that live registry, imported only when checked, so a new entry
                                         there needs no edit here
    names("lmx.models.layers:ACTIVATIONS")   a non-empty tuple of such keys
    weighted("lmx.data.sources:SOURCES")     a tuple of (such key, rate > 0) pairs

`rule.problem(value)` is None for a valid value, else the end of a sentence that starts with `config.a.b=value`:
"is out of range; it must be a float in [0, 1)".
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Collection

_COMPARISON = re.compile(r"^(>=|>|<=|<)\s*(\S+)$")
_INTERVAL = re.compile(r"^([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])$")


class Rule:
    """Base of the rules: `describe()` says what is valid, `problem(value)` what is wrong (None if nothing)."""

    def describe(self) -> str:
        raise NotImplementedError

    def problem(self, value) -> str | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.describe()}>"


class Number(Rule):
    """An int (never a bool) or a float (ints accepted) within a range: ">= 1", "> 0", "[0, 1)", "(0, 1]"."""

    def __init__(self, kind: type, bounds: str, also: tuple = ()):
        self.kind, self.bounds, self.also = kind, bounds, also
        comparison, interval = _COMPARISON.match(bounds.strip()), _INTERVAL.match(bounds.strip())
        if comparison:
            op, number = comparison.groups()
            inf = math.inf
            self.low, self.high = (float(number), inf) if op in (">=", ">") else (-inf, float(number))
            self.low_closed, self.high_closed = op in (">=",), op in ("<=",)
            self._text = f"{op} {number}"
        elif interval:
            left, low, high, right = interval.groups()
            self.low, self.high = float(low), float(high)
            self.low_closed, self.high_closed = left == "[", right == "]"
            self._text = f"in {bounds.strip()}"
        else:
            raise ValueError(f"bounds {bounds!r}: write '>= a', '> a', '<= a', '< a' or an interval like '[a, b)'")

    def describe(self) -> str:
        article = "an int" if self.kind is int else "a float"
        extra = "".join(f"{v!r} or " for v in self.also)
        return f"{extra}{article} {self._text}"

    def problem(self, value) -> str | None:
        types = (int,) if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, types):
            return f"has the wrong type ({type(value).__name__}); it must be {self.describe()}"
        if value in self.also:
            return None
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return None if above and below else f"is out of range; it must be {self.describe()}"


def integer(bounds: str, *, also: int | None = None) -> Rule:
    return Number(int, bounds, () if also is None else (also,))


def real(bounds: str) -> Rule:
    return Number(float, bounds)


class OfType(Rule):
    def __init__(self, kind: type, text: str):
        self.kind, self.text = kind, text

    def describe(self) -> str:
        return self.text

    def problem(self, value) -> str | None:
        if type(value) is not self.kind:
            return f"has the wrong type ({type(value).__name__}); it must be {self.text}"
        return None


BOOLEAN = OfType(bool, "true or false")
TEXT = OfType(str, "a string")


def _resolve(where: str) -> Collection:
    module, _, name = where.partition(":")
    return getattr(importlib.import_module(module), name)


class OneOf(Rule):
    """A name from a fixed list, or from a live registry `"module:NAME"` (a dict's keys or a tuple of names)."""

    def __init__(self, choices: tuple = (), where: str | None = None):
        self.choices, self.where = choices, where

    def known(self) -> list:
        return sorted(_resolve(self.where)) if self.where else list(self.choices)

    def describe(self) -> str:
        return f"one of {self.known()}"

    def problem(self, value) -> str | None:
        known = self.known()
        if not isinstance(value, str) or value not in known:
            return f"is unknown; choose one of {known}"
        return None


def one_of(*choices: str) -> Rule:
    return OneOf(choices=choices)


def registered(where: str) -> Rule:
    return OneOf(where=where)


class Names(Rule):
    """A non-empty tuple of names from a live registry (e.g. the activations of a gated MLP)."""

    def __init__(self, where: str):
        self.where = where

    def describe(self) -> str:
        return f"a non-empty tuple of names from {sorted(_resolve(self.where))}"

    def problem(self, value) -> str | None:
        if not isinstance(value, (tuple, list)) or not value:
            return f"must be {self.describe()}"
        unknown = [v for v in value if v not in _resolve(self.where)]
        return f"names unknown {unknown}; it must be {self.describe()}" if unknown else None


def names(where: str) -> Rule:
    return Names(where)


class Weighted(Rule):
    """A tuple of (name, rate) pairs: names from a live registry, once each, rates positive (a seqio mixture)."""

    def __init__(self, where: str):
        self.where = where

    def describe(self) -> str:
        return f"a tuple of (name, rate > 0) pairs, names from {sorted(_resolve(self.where))}"

    def problem(self, value) -> str | None:
        if not isinstance(value, (tuple, list)):
            return f"must be {self.describe()}"
        seen = set()
        for pair in value:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)):
                return f"holds {pair!r}; it must be {self.describe()}"
            name, rate = pair
            if name not in _resolve(self.where):
                return f"names unknown {name!r}; choose from {sorted(_resolve(self.where))}"
            if name in seen:
                return f"names {name!r} twice; give each one rate"
            seen.add(name)
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0 or not math.isfinite(rate):
                return f"gives {name!r} the rate {rate!r}; rates must be positive numbers"
        return None


def weighted(where: str) -> Rule:
    return Weighted(where)


class Regexes(Rule):
    """A tuple of regular expressions (matched against parameter paths)."""

    def describe(self) -> str:
        return "a tuple of regular expressions"

    def problem(self, value) -> str | None:
        if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
            return f"must be {self.describe()}"
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as e:
                return f"holds {pattern!r}, not a regular expression ({e})"
        return None


REGEXES = Regexes()


class AxisRules(Rule):
    """Logical axis -> mesh axes pairs: ((logical name, None | mesh axis | tuple of mesh axes), ...)."""

    def __init__(self, mesh_axes_where: str):
        self.where = mesh_axes_where

    def describe(self) -> str:
        mesh_axes = list(_resolve(self.where))
        return f"pairs (logical axis, None | a mesh axis | a tuple of mesh axes) over the mesh axes {mesh_axes}"

    def problem(self, value) -> str | None:
        mesh_axes = tuple(_resolve(self.where))
        if not isinstance(value, (tuple, list)):
            return f"must be {self.describe()}"
        for pair in value:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)):
                return f"holds {pair!r}; it must be {self.describe()}"
            target = pair[1]
            targets = () if target is None else (target,) if isinstance(target, str) else target
            if not isinstance(targets, (tuple, list)) or any(t not in mesh_axes for t in targets):
                return f"maps {pair[0]!r} to {target!r}; mesh axes are {list(mesh_axes)} (or None)"
        return None
