"""Where each value of a YAML document is: its line, by the path a validation error names (`steps`, 2, `params`,
`channel`), so a problem in a workflow file is reported with the line to look at; and the keys a mapping repeats
(PyYAML keeps the last silently, which hides a mistake: workflows.spec reports them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import yaml

#: A path into the document: mapping keys and sequence indexes, as pydantic's `loc` names them.
Loc = tuple[str | int, ...]

_MERGE = "tag:yaml.org,2002:merge"


class Duplicate(NamedTuple):
    """A key written again in the same mapping: where (its path), on which line, and the line it was first on."""

    loc: Loc
    line: int
    first_line: int


def line_map(root: yaml.Node) -> dict[Loc, int]:
    """Every path of the constructed document -> the 1-based line where its value (a mapping's: its key) starts.
    Call it once the document is constructed: PyYAML's constructor has then replaced each merge key
    (`<<: *defaults`) by the pairs it merges, in the order it applies them (which PyYAML versions differ on), so
    the last pair of a key is the one whose value the document has: a repeated key is placed at its last writing,
    a merged key at the mapping that merges it unless that mapping has its own. Aliases are followed (the caller
    has bounded what they expand to: workflows.spec.MAX_EXPANDED_NODES)."""
    lines: dict[Loc, int] = {(): root.start_mark.line + 1}
    stack: list[tuple[Loc, yaml.Node]] = [((), root)]
    while stack:
        loc, node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            kept = {key.value: (key, value) for key, value in node.value
                    if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE}  # the last of a key wins, as in PyYAML
            for name, (key, value) in kept.items():
                child = (*loc, name)
                lines[child] = key.start_mark.line + 1
                stack.append((child, value))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*loc, index)
                lines[child] = item.start_mark.line + 1
                stack.append((child, item))
    return lines


def duplicates(root: yaml.Node) -> list[Duplicate]:
    """Each key a mapping writes more than once (every repeat, naming the first), in the document's order. Call
    it on the composed document, before it is constructed (which merges keys into the mappings): keys that come
    in through a merge key are not repeats, the mapping's own override them, as YAML means."""
    found: list[Duplicate] = []
    seen: set[int] = set()  # an anchored node is reported once, however many aliases refer to it
    stack: list[tuple[Loc, yaml.Node]] = [((), root)]
    while stack:
        loc, node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        children: list[tuple[Loc, yaml.Node]] = []
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    continue
                if key.tag == _MERGE:  # the merged mapping(s): their keys are placed here
                    children.extend((loc, m) for m in (value.value if isinstance(value, yaml.SequenceNode)
                                                       else [value]))
                    continue
                line = key.start_mark.line + 1
                if (key.tag, key.value) in first:
                    found.append(Duplicate((*loc, key.value), line, first[(key.tag, key.value)]))
                else:
                    first[(key.tag, key.value)] = line
                children.append(((*loc, key.value), value))
        elif isinstance(node, yaml.SequenceNode):
            children = [((*loc, index), item) for index, item in enumerate(node.value)]
        stack.extend(reversed(children))
    return sorted(found, key=lambda d: d.line)


def line_of(lines: Mapping[Loc, int], loc: Sequence[str | int]) -> int | None:
    """The line of `loc`, or of the nearest enclosing value the document has (a missing key: its mapping's);
    None for the document as a whole, or when there are no lines (a spec given as a dict)."""
    for n in range(len(loc), 0, -1):
        found = lines.get(tuple(loc[:n]))
        if found is not None:
            return found
    return None
