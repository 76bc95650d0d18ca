"""Blocks of Markdown that a command owns inside a file written by someone else (README.md, BENCHMARKS.md).

A block lies between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` lines. :func:`replace_block` rewrites
one block atomically and leaves the rest of the file alone; :func:`blocks_of` returns every block of a text,
so that a report regenerated from scratch keeps the blocks other commands wrote into it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from reconfusion.files import InputError

BLOCK = re.compile(r"<!-- ([\w-]+):start -->\n.*?<!-- \1:end -->", re.DOTALL)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_block(path: Path, name: str, lines: list[str], append: bool = False) -> Path:
    """Put ``lines`` between the markers of block ``name`` in ``path``. Where the markers are missing: with
    ``append``, the block is added at the end of the file (created if absent); without, InputError naming the fix."""
    start, end = markers(name)
    path = Path(path)
    text = path.read_text() if path.is_file() else ""
    if start not in text or end not in text or text.index(start) > text.index(end):
        if not append:
            raise InputError(f"{path}: no {name} block; add the lines {start} and {end} where it goes")
        text = f"{text.rstrip()}\n\n{start}\n{end}\n" if text else f"{start}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    block = "\n".join(lines)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{head}{start}\n{block}\n{end}{tail}")
    os.replace(tmp, path)
    return path


def blocks_of(text: str) -> list[str]:
    """Every block of ``text``, markers included, in order."""
    return [match.group(0) for match in BLOCK.finditer(text)]
