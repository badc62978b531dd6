"""The report's blocks rendered twice, as GitHub-flavoured Markdown and as one self-contained HTML page, so the
two always hold the same tables. Every text is escaped: text from the run's files never turns into markup.

A block is ("h2", text) | ("h3", text) | ("p", text) | ("banner", text) | ("img", file, alt)
         | ("table", name, header, rows, keys): `keys` name the rows (data-key in the HTML).
"""

from __future__ import annotations

import html


def markdown_text(text: str) -> str:
    """`text` with <, > and & escaped, so that text from files never turns into markup."""
    return html.escape(str(text), quote=False)


def markdown_cell(text: str) -> str:
    """`text` for a Markdown table cell: escaped, `|` escaped, newlines as <br>."""
    return markdown_text(text).replace("|", "\\|").replace("\n", "<br>")


def render_markdown(title: str, blocks: list[tuple]) -> str:
    """The blocks as GitHub-flavoured Markdown (text HTML-escaped; in table cells newlines as <br>)."""
    out = [f"# {title}"]
    for kind, *args in blocks:
        if kind == "h2":
            out.append(f"## {args[0]}")
        elif kind == "h3":
            out.append(f"### {args[0]}")
        elif kind == "p":
            out.append(markdown_text(args[0]))
        elif kind == "banner":
            out.append(f"> **{markdown_text(args[0])}**")
        elif kind == "img":
            out.append(f"![{args[1]}]({args[0]})")
        elif kind == "table":
            _, header, rows, _ = args
            lines = ["| " + " | ".join(markdown_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; white-space: pre-wrap; }
th { background: #f0f0f0; }
table#benchmarks td, table#accuracy td, table#readings td { min-width: 4em; }
table#samples td { font-family: ui-monospace, monospace; font-size: 0.85em; max-width: 28em; }
.banner { background: #fff3cd; border: 2px solid #e0a800; padding: 0.8em 1em; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def render_html(title: str, blocks: list[tuple]) -> str:
    """The blocks as one self-contained HTML page (every text HTML-escaped; images by relative path)."""
    e = html.escape
    out = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
           f"<style>{STYLE}</style></head><body>", f"<h1>{e(title)}</h1>"]
    for kind, *args in blocks:
        if kind in ("h2", "h3"):
            out.append(f"<{kind}>{e(args[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{e(args[0])}</p>")
        elif kind == "banner":
            out.append(f"<div class=\"banner\" id=\"baseline-banner\">{e(args[0])}</div>")
        elif kind == "img":
            out.append(f"<figure><img src=\"{e(args[0])}\" alt=\"{e(args[1])}\"></figure>")
        elif kind == "table":
            name, header, rows, keys = args
            head = "".join(f"<th>{e(h)}</th>" for h in header)
            body = "".join(f"<tr data-key=\"{e(key)}\">" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>"
                           for key, row in zip(keys, rows))
            out.append(f"<table id=\"{e(name)}\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return "\n".join(out) + "\n</body></html>\n"
