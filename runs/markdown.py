"""The report's markdown as HTML, for its page."""

from __future__ import annotations

import re

from django.utils.html import escape

# A small Markdown subset, enough for the report: headings, paragraphs, lists,
# pipe tables, fenced code, `code` and **bold**. All text is escaped first.
HEADING_RE = re.compile(r"^(#{1,6})\s+(.*)$")
LIST_RE = re.compile(r"^\s*[-*]\s+(.*)$")
RULE_RE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
CODE_SPAN_RE = re.compile(r"`([^`]+)`")
BOLD_RE = re.compile(r"\*\*(.+?)\*\*")
CELL_SPLIT_RE = re.compile(r"(?<!\\)\|")


def render_markdown(text: str) -> str:
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            body = lines[i + 1 : end]
            chart = histogram_svg(body) if line == "```histogram" else None
            out.append(chart or f"<pre><code>{escape(chr(10).join(body))}</code></pre>")
            i = end + 1
        elif heading := HEADING_RE.match(line):
            level = len(heading[1])
            out.append(f"<h{level}>{inline(heading[2])}</h{level}>")
            i += 1
        elif line.startswith("|") and i + 1 < len(lines) and RULE_RE.match(lines[i + 1]):
            end = next((j for j in range(i + 2, len(lines)) if not lines[j].startswith("|")), len(lines))
            out.append(md_table(cells(line), [cells(row) for row in lines[i + 2 : end]]))
            i = end
        elif LIST_RE.match(line):
            end = next((j for j in range(i, len(lines)) if not LIST_RE.match(lines[j])), len(lines))
            items = "".join(f"<li>{inline(LIST_RE.match(row)[1])}</li>" for row in lines[i:end])
            out.append(f"<ul>{items}</ul>")
            i = end
        elif not line.strip():
            i += 1
        else:
            end = next(
                (j for j in range(i, len(lines)) if not lines[j].strip() or starts_block(lines[j])),
                len(lines),
            )
            out.append(f"<p>{inline(' '.join(lines[i : max(end, i + 1)]))}</p>")
            i = max(end, i + 1)
    return "\n".join(out)


HISTOGRAM_LINE_RE = re.compile(r"^(\S+) \| [█]* ?(\d+)$")


def histogram_svg(lines: list[str]) -> str | None:
    """The report's text histogram ("0.0–0.1 | ███ 3" a bin) as an SVG bar chart."""
    bins = [HISTOGRAM_LINE_RE.match(line) for line in lines]
    if not bins or not all(bins):
        return None
    counts = [int(b[2]) for b in bins]
    width, height, left, base, top = 400, 160, 8, 136, 16
    step, scale = (width - 2 * left) / len(bins), (base - top) / (max(counts) or 1)
    parts = [
        f'<svg class="chart histogram" viewBox="0 0 {width} {height}" role="img" aria-label="Runs per score bin">'
    ]
    for n, (match, count) in enumerate(zip(bins, counts, strict=True)):
        x, h = left + n * step, count * scale
        label = escape(match[1])
        parts.append(
            f'<rect class="bar" x="{x + 1:.1f}" y="{base - h:.1f}" width="{step - 2:.1f}" height="{h:.1f}">'
            f"<title>{label}: {count}</title></rect>"
        )
        if count:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{base - h - 3:.1f}" text-anchor="middle">{count}</text>'
            )
        if n % 2 == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{base + 14}" text-anchor="start">{label.split("–")[0]}</text>'
            )
    parts.append(f'<line class="axis" x1="{left}" x2="{width - left}" y1="{base}" y2="{base}"/></svg>')
    return "".join(parts)


def starts_block(line: str) -> bool:
    return line.startswith(("```", "|", "#")) or bool(LIST_RE.match(line))


def inline(text: str) -> str:
    parts = CODE_SPAN_RE.split(text)  # odd positions are code spans
    html = [
        f"<code>{escape(part)}</code>" if n % 2 else BOLD_RE.sub(r"<strong>\1</strong>", str(escape(part)))
        for n, part in enumerate(parts)
    ]
    return "".join(html)


def cells(row: str) -> list[str]:
    inner = row.strip()[1:]
    if inner.endswith("|") and not inner.endswith("\\|"):
        inner = inner[:-1]
    return [cell.strip().replace("\\|", "|") for cell in CELL_SPLIT_RE.split(inner)]


def md_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f'<th scope="col">{inline(c)}</th>' for c in header)
    body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
