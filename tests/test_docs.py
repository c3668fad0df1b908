"""README.md stays a five-minute read and the docs hold together (issue [docs-and-rooms]): at most
250 lines with both set-up markers (.ci/run reads the test command from them), a line for every
docs page, and every relative link in README.md and docs/*.md resolves to a file, and to a
heading of that file when it names one."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks (a link inside code is no link)."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            out.append(line)
    return "\n".join(out)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", _prose(path.read_text()),
                                                     re.M)}


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(page.read_text(encoding="utf-8")))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto: are not ours


def test_readme_is_short_and_keeps_both_set_up_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    for marker in ("main-command", "test-command"):
        block = text.split(f"<!-- {marker} -->", 1)[1].split(f"<!-- /{marker} -->", 1)[0]
        assert block.strip().startswith("```") and "pip install torch==2.13.0" in block


def test_readme_lists_every_docs_page():
    listed = set(relative_links(ROOT / "README.md"))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert len(pages) >= 5
    assert not pages - listed, f"docs pages the README does not list: {sorted(pages - listed)}"


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_relative_links_resolve(page):
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        path = (page.parent / file_part).resolve() if file_part else page
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, broken


def test_the_link_check_sees_a_broken_link(tmp_path):
    """Not vacuous: a missing file and a missing heading are both reported."""
    (tmp_path / "a.md").write_text("# Title\n[x](b.md) [y](a.md#nope) [z](a.md#title)\n"
                                   "```\n[in code](ignored.md)\n```\n")
    assert relative_links(tmp_path / "a.md") == ["b.md", "a.md#nope", "a.md#title"]
    assert "nope" not in _anchors(tmp_path / "a.md") and "title" in _anchors(tmp_path / "a.md")
