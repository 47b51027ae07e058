"""YAML for untrusted spec files (device profiles, export and training recipes): one reading, bounded cost.

``yaml.safe_load`` builds no Python objects beyond plain data, but still lets through: aliases (``*a``), which share
one object many times so that ten lines become 10^9 nodes for whoever walks them (a "billion laughs"); duplicate keys
(the last silently wins); ``.nan``/``.inf``; lone surrogates from ``"\\ud800"`` escapes; nesting deep enough to
exhaust the stack. All are refused here, each as one line naming the file, line and column.
"""

from __future__ import annotations

from typing import Any

import yaml

from edgelmm import strict_json
from edgelmm.errors import EdgelmmError

MAX_YAML_BYTES = 4 * 2**20


class _StrictLoader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} is not allowed", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r:.60}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(data: str | bytes, *, where: str, error: type[EdgelmmError], max_depth: int = 32) -> Any:
    """Parse one YAML document strictly; every problem raises ``error`` with one line naming ``where``."""
    if isinstance(data, bytes):
        if len(data) > MAX_YAML_BYTES:
            raise error(f"'{where}' is {len(data)} bytes; a spec file is at most {MAX_YAML_BYTES}")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"'{where}' is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if len(data) > MAX_YAML_BYTES:
        raise error(f"'{where}' is {len(data)} characters; a spec file is at most {MAX_YAML_BYTES}")
    if not data.strip():
        raise error(f"'{where}' is empty")
    try:
        loader = _StrictLoader(data)  # a SafeLoader: what yaml.safe_load runs, plus the refusals above
        try:
            value = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where_in = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise error(f"'{where}' is not valid YAML: {exc.problem or exc.context}{where_in}") from None
    except yaml.YAMLError as exc:
        raise error(f"'{where}' is not valid YAML: {str(exc).splitlines()[0][:120]}") from None
    except RecursionError:
        raise error(f"'{where}' is nested too deeply") from None
    except (ValueError, TypeError) as exc:  # from PyYAML's constructors: a 5000-digit int, an unhashable key...
        raise error(f"'{where}' has a value that cannot be read: {str(exc).splitlines()[0][:120]}") from None
    strict_json.check_values(value, where=where, error=error, max_depth=max_depth)
    return value
