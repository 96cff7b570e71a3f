"""Where each value of a YAML document is: its line, by the path a validation error names (`steps`, 2, `params`,
`channel`), so a problem in a workflow file is reported with the line to look at."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import yaml

#: A path into the document: mapping keys and sequence indexes, as pydantic's `loc` names them.
Loc = tuple[str | int, ...]


def line_map(root: yaml.Node) -> dict[Loc, int]:
    """Every path of the composed document -> the 1-based line where its value (a mapping's: its key) starts.
    Aliases are followed (the caller has bounded what they expand to: workflows.spec.MAX_EXPANDED_NODES); a
    merge key (`<<: *defaults`) places the merged keys at the mapping that merges them, after its own keys."""
    lines: dict[Loc, int] = {(): root.start_mark.line + 1}
    stack: list[tuple[Loc, yaml.Node]] = [((), root)]
    while stack:
        loc, node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            merges: list[yaml.Node] = []
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    continue
                if key.tag == "tag:yaml.org,2002:merge":
                    merges.extend(value.value if isinstance(value, yaml.SequenceNode) else [value])
                    continue
                child = (*loc, key.value)
                lines.setdefault(child, key.start_mark.line + 1)
                stack.append((child, value))
            # The mapping's own keys are placed above already (setdefault): a merged key they override keeps theirs.
            stack.extend((loc, m) for m in merges)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*loc, index)
                lines.setdefault(child, item.start_mark.line + 1)
                stack.append((child, item))
    return lines


def line_of(lines: Mapping[Loc, int], loc: Sequence[str | int]) -> int | None:
    """The line of `loc`, or of the nearest enclosing value the document has (a missing key: its mapping's);
    None for the document as a whole, or when there are no lines (a spec given as a dict)."""
    for n in range(len(loc), 0, -1):
        found = lines.get(tuple(loc[:n]))
        if found is not None:
            return found
    return None
