"""Reading a config's YAML safely: bounded size, bounded alias expansion, no duplicate keys.

``yaml.safe_load`` never runs code, but a few hundred bytes of aliases (a "billion laughs")
expand to billions of values, and a later error message that prints the value takes minutes
and gigabytes. So the document is composed first and checked as a graph: at most
``MAX_YAML_CHARS`` of text, ``MAX_ALIASES`` aliases and ``MAX_VALUES`` values once aliases
are expanded, no alias that refers to itself, and no key given twice in one mapping (YAML
would silently keep the last). Each failure is a :class:`ConfigError` naming the key path.

Example:
    >>> load_yaml("teachers: {pool: 3}")
    {'teachers': {'pool': 3}}
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import ConfigError

MAX_YAML_CHARS = 1 << 20
MAX_ALIASES = 100
MAX_VALUES = 100_000
_MERGE = "tag:yaml.org,2002:merge"


def load_yaml(text: str) -> Any:
    """The YAML document in ``text`` as plain values (after the checks above)."""
    if len(text) > MAX_YAML_CHARS:
        raise ConfigError(
            f"the config is {len(text)} characters of YAML, more than {MAX_YAML_CHARS}: "
            "is this the right file?"
        )
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _Walk().check(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"the config is not valid YAML: {_first_lines(exc)}") from None
    finally:
        loader.dispose()


class _Walk:
    """One pass over the node graph: expanded size, aliases, cycles, duplicate keys."""

    def __init__(self) -> None:
        self.size: dict[int, int] = {}  # node id -> values it expands to (memoised)
        self.active: set[int] = set()
        self.aliases = 0

    def check(self, root: Node) -> None:
        total = self.count(root, "")
        if total > MAX_VALUES:
            raise ConfigError(
                f"the config expands to {total} values through YAML aliases, more than "
                f"{MAX_VALUES}: aliases (*name) may not multiply the config"
            )

    def count(self, node: Node, path: str) -> int:
        key = id(node)
        if key in self.size:  # seen before: this reference is an alias
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise ConfigError(
                    f"{path or 'the config'}: more than {MAX_ALIASES} YAML aliases (*name)"
                )
            return self.size[key]
        if key in self.active:
            raise ConfigError(f"{path or 'the config'}: a YAML alias refers to itself")
        self.active.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                total += self.count(item, f"{path}[{i}]")
                self._bound(total, path)
        elif isinstance(node, MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for k, v in node.value:
                name = _key_name(k)
                here = f"{path}.{name}" if path else name
                if isinstance(k, ScalarNode) and k.tag != _MERGE:
                    ident = (k.tag, k.value)
                    if ident in seen:
                        raise ConfigError(
                            f"{here}: duplicate key (lines {seen[ident] + 1} and "
                            f"{k.start_mark.line + 1}); give each option once"
                        )
                    seen[ident] = k.start_mark.line
                total += self.count(k, here) + self.count(v, here)
                self._bound(total, path)
        self.active.discard(key)
        self.size[key] = total
        return total

    @staticmethod
    def _bound(total: int, path: str) -> None:
        if total > MAX_VALUES:
            raise ConfigError(
                f"{path or 'the config'}: expands to more than {MAX_VALUES} values through "
                "YAML aliases (*name): aliases may not multiply the config"
            )


def _key_name(node: Node) -> str:
    if isinstance(node, ScalarNode):
        text = str(node.value)
        return text if len(text) <= 40 else text[:37] + "..."
    return "<key>"


def _first_lines(exc: BaseException, limit: int = 600) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."
