"""The report in the forms papers and sites take: one self-contained HTML file, and its tables as LaTeX.

``html_document`` renders the report's Markdown with Python-Markdown (tables extension) and puts
every picture it links inline as a data URI, so the one file can be mailed or attached to a run
and shows everything in a browser. ``latex_tables`` turns every Markdown table of the report into
a LaTeX ``tabular`` (booktabs rules) under the heading it sits in, as ranx and ann-benchmarks
export theirs.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import markdown
import pandas as pd

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f6f6f6; padding: 0 0.2em; }
"""


def html_document(report_markdown: str, title: str, pictures_dir: Path) -> str:
    """The report as one HTML page, the pictures it links (relative to ``pictures_dir``) inlined."""
    body = markdown.markdown(report_markdown, extensions=["tables"])

    def inline(match: re.Match) -> str:
        source = match.group(2)
        path = pictures_dir / html.unescape(source)
        if source.startswith("data:") or not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f'{match.group(1)}data:image/png;base64,{data}{match.group(3)}'

    body = re.sub(r'(<img [^>]*src=")([^"]+)(")', inline, body)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def markdown_tables(report_markdown: str) -> list[tuple[str, pd.DataFrame]]:
    """Every table of a Markdown report, with the heading above it."""
    tables, heading, block = [], "", []
    for line in [*report_markdown.splitlines(), ""]:
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("|"):
            block.append(line)
            continue
        if len(block) >= 2:
            cells = [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in block]
            header, rows = cells[0], [row for row in cells[2:]]
            tables.append((heading, pd.DataFrame(rows, columns=header)))
        block = []
    return tables


def latex_tables(report_markdown: str) -> str:
    """Every table of the report as a LaTeX table (needs ``\\usepackage{booktabs}``)."""
    parts = ["% fashionbench report tables: \\usepackage{booktabs}"]
    for number, (heading, table) in enumerate(markdown_tables(report_markdown), start=1):
        plain = table.map(lambda cell: re.sub(r"\*\*|`", "", cell))
        plain.columns = [re.sub(r"\*\*|`", "", str(column)) or " " for column in plain.columns]
        caption = heading or f"Table {number}"
        parts.append(plain.to_latex(index=False, escape=True, caption=caption, label=f"tab:fashionbench-{number}",
                                    column_format="l" * len(plain.columns)))
    return "\n".join(parts) + "\n"
