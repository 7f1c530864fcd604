"""Every relative link in README.md, docs/*.md, deploy/README.md and bench/README.md resolves: the file exists, and
a #anchor names a heading."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import ROOT

LINK = re.compile(r"!?\[[^\]]*\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)|^\s*\[[^\]]+\]:\s*(\S+)", re.M)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy/README.md",
            ROOT / "bench/README.md"]


def without_code(text: str) -> str:
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def anchors(text: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")  # a link's text, code as text
        slug = re.sub(r"[^\w\- ]", "", plain.lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    out |= set(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", text))
    return out


def broken_links(page: Path) -> list[str]:
    out = []
    text = page.read_text(encoding="utf-8")
    for match in LINK.finditer(without_code(text)):
        target = match.group(1) or match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            out.append(f"{page.name}: {target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            out.append(f"{page.name}: {target}: no heading #{anchor} in {dest.name}")
    return out


def test_every_relative_link_of_the_readme_and_docs_resolves():
    assert len(pages()) >= 8
    broken = [line for page in pages() for line in broken_links(page)]
    assert broken == []


def test_the_check_finds_a_missing_file_a_missing_heading_and_accepts_good_links(tmp_path):
    (tmp_path / "other.md").write_text("# Speed of λ, measured\n\n## Results (2026)\n## Results (2026)\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#speed-of-λ-measured) [ok](other.md#results-2026-1) [ok](#top)\n# Top\n"
                    "[gone](missing.md) ![gone](fig.png) [bad](other.md#speed) [web](https://example.org/x)\n"
                    "```\n[in code](nowhere.md)\n```\n[ref]: also-missing.md\n")
    assert [line.split(": ")[1] for line in broken_links(page)] == [
        "missing.md", "fig.png", "other.md#speed", "also-missing.md"]
