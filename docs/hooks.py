"""MkDocs hooks: example pages from `examples/*.py`, and repository includes.

Two things happen at build time, so the docs never hold a stale copy:

- Every keras.io-style tutobook `examples/NAME.py` becomes the page
  `examples/NAME.md`: the header docstring becomes the title and metadata,
  each top-level `\"\"\"` string a Markdown cell, and the code between them
  fenced Python. If `docs/examples/NAME.png` exists (a figure the example
  writes, copied there by hand), it is shown after the code cell that calls
  `savefig`.
- A page line `<!-- include: PATH -->` is replaced by the repository file
  `PATH` with its headings moved one level down, or by a note when the file
  does not exist yet (e.g. `benchmarks/RESULTS.md` before a benchmark run).

Only the standard library and MkDocs are used.
"""

import pathlib
import re

from mkdocs.structure.files import File
from mkdocs.structure.files import Files

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HEADER_KEYS = (
    "Author",
    "Date created",
    "Last modified",
    "Description",
    "Accelerator",
)
INCLUDE = re.compile(r"^<!--\s*include:\s*(?P<path>\S+)\s*-->\s*$", re.M)


def _parse_header(lines: list[str]) -> tuple[dict[str, str], int]:
    """Reads the `Title: ...` header docstring; returns it and the next line."""
    if not lines or lines[0].strip() != '"""':
        raise ValueError('A tutobook must start with a `"""` header.')
    header = {}
    for index, line in enumerate(lines[1:], start=1):
        if line.strip() == '"""':
            if "Title" not in header:
                raise ValueError("The tutobook header has no `Title:` line.")
            return header, index + 1
        key, _, value = line.partition(":")
        header[key.strip()] = value.strip()
    raise ValueError('The tutobook header is not closed by `"""`.')


def _cells(lines: list[str]) -> list[tuple[str, str]]:
    """Splits a tutobook body into ("markdown" | "code", text) cells."""
    cells = []
    kind, buffer = "code", []

    def flush():
        text = "\n".join(buffer).strip("\n")
        if text.strip():
            cells.append((kind, text))
        buffer.clear()

    for line in lines:
        if kind == "code" and line.startswith('"""'):
            rest = line[3:]
            if rest.rstrip().endswith('"""') and rest.strip() != "":
                flush()  # a one-line Markdown cell: """text"""
                cells.append(("markdown", rest.rstrip()[:-3].strip()))
                continue
            flush()
            kind = "markdown"
            if rest.strip():
                buffer.append(rest)
        elif kind == "markdown" and line.rstrip() == '"""':
            flush()
            kind = "code"
        else:
            buffer.append(line)
    if kind == "markdown":
        raise ValueError('A Markdown cell is not closed by `"""`.')
    flush()
    return cells


def tutobook_to_markdown(source: str, name: str, figure: str | None) -> str:
    """Converts a keras.io tutobook to a Markdown page."""
    lines = source.splitlines()
    header, start = _parse_header(lines)
    out = [f"# {header['Title']}", ""]
    for key in HEADER_KEYS:
        if key in header:
            out.append(f"**{key}:** {header[key]}<br>")
    out += [
        f"**Source:** `examples/{name}.py` in the repository. Run it from the "
        f"repository root with `python examples/{name}.py`, or with "
        "`KERAMETA_SMOKE=1` set for a quick run.",
        "",
    ]
    figure_shown = False
    for kind, text in _cells(lines[start:]):
        if kind == "markdown":
            out += [text, ""]
            continue
        out += ["```python", text, "```", ""]
        if figure and not figure_shown and "savefig(" in text:
            out += [f"![Figure written by the example]({figure})", ""]
            figure_shown = True
    return "\n".join(out)


def on_files(files: Files, config) -> Files:
    """Adds one generated page per `examples/*.py` tutobook."""
    for path in sorted(EXAMPLES.glob("*.py")):
        docs_png = pathlib.Path(config["docs_dir"]) / "examples"
        figure = f"{path.stem}.png"
        if not (docs_png / figure).exists():
            figure = None
        content = tutobook_to_markdown(
            path.read_text(encoding="utf-8"), path.stem, figure
        )
        files.append(
            File.generated(config, f"examples/{path.stem}.md", content=content)
        )
    return files


def _include(match: re.Match) -> str:
    relative = match.group("path")
    path = (ROOT / relative).resolve()
    if ROOT not in path.parents or not path.is_file():
        return (
            f'!!! note "Not generated yet"\n\n    `{relative}` does not exist '
            "in this checkout yet: it is generated, see the instructions "
            "on this page."
        )
    # The page has its own title: move every heading one level down
    # (outside fenced code blocks).
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,5} ", line):
            line = "#" + line
        lines.append(line)
    return "\n".join(lines).strip()


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replaces `<!-- include: PATH -->` lines with repository files."""
    return INCLUDE.sub(_include, markdown)


def on_serve(server, config, builder):
    """Rebuilds on `mkdocs serve` when an example or benchmark changes."""
    server.watch(str(EXAMPLES))
    server.watch(str(ROOT / "benchmarks"))
    return server
