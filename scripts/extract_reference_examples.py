#!/usr/bin/env python3
"""Extract the JSON examples of the vendor's Closum API reference into test data files.

    .venv/bin/python scripts/extract_reference_examples.py PATH/TO/closum-api-reference.txt

Run once, by hand, when the reference changes; the files it writes under
``tests/data/reference_examples/`` are committed and are all the tests read
(the reference itself is never needed to run them). Each curl command of the
reference becomes one file ``NN-<method>-<path>.json``::

    {"line": 7, "method": "POST", "url": "https://api.closum.com/api/token",
     "body": {...} or null, "response": {...}}

``line`` is where the command starts in the reference; ``body`` is its ``-d``
request body and ``response`` the JSON shown after "The above command returns
JSON structured like this". The reference's ``{ ... }`` placeholders (standing
for more items of a list) and the trailing commas they leave are dropped;
nothing else is changed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "reference_examples"
API_PREFIX = "https://api.closum.com/api/"


@dataclass
class Example:
    """One curl command of the reference, with its request body and its response."""

    method: str
    url: str
    line: int
    body: Any = None
    response: Any = None

    @property
    def path(self) -> str:
        """The URL's path below ``/api/``, e.g. ``lead/1``."""
        return self.url.split("/api/", 1)[1].strip("/")

    def file_name(self, index: int) -> str:
        """``NN-<method>-<path>.json``, e.g. ``04-get-lead-1.json``."""
        return f"{index:02d}-{self.method.lower()}-{self.path.replace('/', '-')}.json"

    def as_dict(self) -> dict[str, Any]:
        """What the data file holds."""
        return {
            "line": self.line,
            "method": self.method,
            "url": self.url,
            "body": self.body,
            "response": self.response,
        }


def clean_json(text: str) -> object:
    """Parse an example: drop ``{ ... }`` placeholders and trailing commas."""
    text = re.sub(r"\{\s*\.\.\.\s*\}\s*,?", "", text)
    text = re.sub(r",(\s*[\]}])", r"\1", text)
    value: object = json.loads(text)
    return value


def _balanced(lines: list[str], start: int) -> tuple[str, int]:
    """The JSON text starting at ``lines[start]``, up to its closing brace, and the index of its last line."""
    depth, out = 0, []
    for i in range(start, len(lines)):
        line = lines[i]
        out.append(line)
        depth += line.count("{") + line.count("[") - line.count("}") - line.count("]")
        if depth <= 0:
            return "\n".join(out), i
    msg = f"unbalanced JSON example starting at line {start + 1}"
    raise ValueError(msg)


def extract_examples(text: str) -> list[Example]:
    """Every curl command of the reference text, in order, with its body and response."""
    lines = text.splitlines()
    examples: list[Example] = []
    current: Example | None = None
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        m = re.match(r"curl -X (\w+)", line)
        if m:
            # The reference sometimes repeats "curl -X POST \" on two lines: one command.
            if current is None or current.url:
                current = Example(method=m.group(1), url="", line=i + 1)
                examples.append(current)
        elif current is not None and line.startswith(API_PREFIX) and not current.url:
            current.url = line.rstrip(" \\")
        elif current is not None and line.startswith("-d '"):
            lines[i] = lines[i].split("-d '", 1)[1]
            raw, end = _balanced(lines, i)
            current.body = clean_json(raw.rstrip().rstrip("'"))
            i = end
        elif current is not None and "The above command returns JSON" in line:
            raw, end = _balanced(lines, i + 1)
            current.response = clean_json(raw)
            i = end
        i += 1
    return examples


def write_examples(examples: list[Example], out: Path) -> list[Path]:
    """Replace the ``*.json`` files of ``out`` with one file per example."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.json"):
        old.unlink()
    written = []
    for index, example in enumerate(examples, start=1):
        path = out / example.file_name(index)
        path.write_text(json.dumps(example.as_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Extract the examples of the reference named on the command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("reference", type=Path, help="the Closum API reference, as text (closum-api-reference.txt)")
    parser.add_argument(
        "--out", type=Path, default=OUT, help="where to write the files (default: tests/data/reference_examples/)"
    )
    args = parser.parse_args(argv)
    examples = extract_examples(args.reference.read_text(encoding="utf-8"))
    incomplete = [e for e in examples if not e.url or e.response is None]
    if incomplete:
        print(f"examples without a URL or a response: {incomplete}", file=sys.stderr)
        return 1
    written = write_examples(examples, args.out)
    bodies = sum(e.body is not None for e in examples)
    print(f"{len(written)} examples ({bodies} with a request body) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
