"""What the benchmarks share about their results: the `--write` option, and the section of
docs/benchmarks.md each one rewrites (between `<!-- NAME:start -->` and `<!-- NAME:end -->`)."""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "benchmarks.md"


def add_write_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write docs/benchmarks.md (default: only after a full run)",
    )


def write_section(name: str, title: str, block: str) -> None:
    """Replace benchmark `name`'s section with `block`; a missing one is added at the end
    under the heading `title`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    section = f"{start}\n{block}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n## {title}\n\n{section}\n"
    DOCS.write_text(text)
    print(f"\nwrote the results into {DOCS.relative_to(REPO)}")
