"""ncnn's ``.param`` text format read into layers: the magic, the layer and blob counts, then one layer per line
(type, name, bottom and top counts, the blob names, ``key=value`` parameters)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class NcnnLayer:
    kind: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[str, str]
    line: int  # its line in the .param


def read_param(param: str) -> list[NcnnLayer]:
    """The layers of an ncnn ``.param`` (its text format: magic, counts, one layer per line)."""
    layers = []
    for number, line in enumerate(param.splitlines()):
        fields = line.split()
        if number < 2 or len(fields) < 4:
            continue
        bottoms, tops = int(fields[2]), int(fields[3])
        names = fields[4:4 + bottoms + tops]
        params = dict(item.split("=", 1) for item in fields[4 + bottoms + tops:] if "=" in item)
        layers.append(NcnnLayer(fields[0], fields[1], names[:bottoms], names[bottoms:], params, number))
    return layers
