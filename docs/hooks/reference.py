"""MkDocs hook: the references that are generated, so that they cannot drift
from what they describe. ``<!-- generated: hotplate.h -->`` becomes the C API
from the header's own ``CAPI:`` comments and declarations;
``<!-- generated: cli -->`` becomes every command's ``--help``; the home page
is the README (``<!-- generated: README.md -->``), its links made the site's."""
from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "server" / "include" / "hotplate.h"
#: Sections of the header a module author never calls.
INTERNAL = ("Function table",)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- generated: hotplate.h -->" in markdown:
        markdown = markdown.replace("<!-- generated: hotplate.h -->", c_api(HEADER.read_text()))
    if "<!-- generated: README.md -->" in markdown:
        markdown = markdown.replace("<!-- generated: README.md -->", front_page((ROOT / "README.md").read_text()))
    if "<!-- generated: cli -->" in markdown:
        markdown = markdown.replace("<!-- generated: cli -->", cli())
    return markdown


def front_page(readme: str) -> str:
    """The README with its ``docs/`` links made relative to the site, and
    links to files outside it (the header) made plain text."""
    readme = readme.replace("](docs/", "](")
    return re.sub(r"\[([^]]+)\]\((?!https?://)([^)]+)\)",
                  lambda m: m.group(0) if m.group(2).split("#")[0].endswith(".md") else m.group(1), readme)


def c_api(header: str) -> str:
    """The header as Markdown: each banner a section, each ``CAPI:`` comment
    its prose, then the declarations it documents (inline bodies cut)."""
    out: list[str] = []
    for kind, text in _blocks(header):
        if kind == "banner":
            out.append(f"### {text}\n")
        elif kind == "doc":
            title, _, prose = text.partition("\n")
            out.append(f"#### {title.strip().rstrip('.')}\n\n{_prose(prose)}\n")
        elif kind == "note":
            out.append(_prose(text) + "\n")
        elif kind == "code":
            out.append(f"```c\n{text}\n```\n")
    return "\n".join(out)


def _blocks(header: str):
    """(banner | doc | code, text) in the header's order, from the first
    ``CAPI:`` comment; sections named in INTERNAL left out."""
    for wrapper in ('#ifdef __cplusplus\nextern "C" {\n#endif\n', '#ifdef __cplusplus\n}\n#endif\n',
                    "#ifndef HOTPLATE_H\n#define HOTPLATE_H\n", "#endif /* HOTPLATE_H */\n"):
        header = header.replace(wrapper, "")  # the header's guard and C++ linkage: not API
    lines = header.split("\n")
    i, code, skipping, started = 0, [], False, False

    def flush():
        text = "\n".join(code).strip("\n")
        code.clear()
        return [("code", text)] if text and started and not skipping else []

    while i < len(lines):
        line = lines[i]
        if line.startswith("/* ---") and i + 2 < len(lines) and lines[i + 2].startswith("/* ---"):
            yield from flush()
            yield "banner", lines[i + 1].strip("/* ").strip()
            i += 3
            continue
        if line == "/*" and i + 1 < len(lines) and lines[i + 1].startswith("**"):
            yield from flush()
            end = next(j for j in range(i, len(lines)) if lines[j].startswith("*/"))
            body = [re.sub(r"^\*\* ?", "", x) for x in lines[i + 1:end]]
            if body[0].startswith("CAPI:"):  # a titled section; other comments are notes within one
                body[0] = body[0].removeprefix("CAPI:").strip()
                started, skipping = True, body[0].startswith(INTERNAL)
                kind = "doc"
            else:
                kind = "note"
            if started and not skipping:
                yield kind, "\n".join(body)
            i = end + 1
            continue
        if line.startswith("static inline") and "{" in line:
            code.append(line[:line.index("{")].rstrip() + ";")
            depth = line.count("{") - line.count("}")
            while depth > 0:  # a body over several lines
                i += 1
                depth += lines[i].count("{") - lines[i].count("}")
        elif not line.startswith("#include "):
            code.append(line)
        i += 1
    yield from flush()


def _prose(text: str) -> str:
    """A comment as Markdown: paragraphs joined, and any paragraph with an
    indented line (an example, an aligned list) kept as it is, in a block."""
    paragraphs = re.split(r"\n\s*\n", text.strip("\n"))
    out = []
    for p in paragraphs:
        if any(x.startswith(" ") for x in p.split("\n")):
            out.append("```\n" + "\n".join(x.rstrip() for x in p.split("\n")) + "\n```")
        else:
            out.append(_literal(" ".join(x.strip() for x in p.split("\n"))))
    return "\n\n".join(out)


def _literal(text: str) -> str:
    """C prose as Markdown that shows it as written: ``<int:id>``, ``*out``
    and ``hp_x_y`` are not HTML or emphasis; its `backquoted` spans stay code."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(part if part.startswith("`") else
                   re.sub(r"([\\*_\[\]])", r"\\\1", part).replace("<", "&lt;").replace(">", "&gt;") for part in parts)


def cli() -> str:
    from hotplate.controller.cli import parser

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: the same page everywhere
    p = parser()
    sub = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction")
    out = [f"```text\n{p.format_usage().strip()}\n```\n"]
    for name, command in sub.choices.items():
        out.append(f"## hotplate {name}\n\n```text\n{command.format_help().strip()}\n```\n")
    return "\n".join(out)
