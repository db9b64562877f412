"""The README stays a newcomer's page and the docs/ pages stay reachable: the README is at most
300 lines and links every page, every relative link (and its #anchor) in the README, docs/ and
deploy/'s READMEs resolves, and each page starts with its title and a one-line purpose."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PAGES = sorted((REPO / "docs").glob("*.md"))
DEPLOY_PAGES = [REPO / "deploy" / "README.md", REPO / "deploy" / "redis" / "README.md"]
# Written by a generator that has its own freshness test; a link to it is fine before it is built.
GENERATED = {REPO / "docs" / "configuration.md"}

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6}) +(.+?) *$", re.M)


def _prose(text: str) -> str:
    """The text without code blocks, so `[...](...)` inside code is not taken for a link."""
    return FENCE.sub("", text)


def _links(path: Path) -> list[str]:
    return LINK.findall(CODE.sub("", _prose(path.read_text())))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for _, title in HEADING.findall(_prose(path.read_text())):
        slug = _slug(title)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def test_readme_is_at_most_300_lines():
    n = len(README.read_text().splitlines())
    assert n <= 300, f"README.md has {n} lines: move reference text into a docs/ page"


@pytest.mark.parametrize("path", [README, *PAGES, *DEPLOY_PAGES],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path):
    broken = []
    for link in _links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:, file:
            continue
        target, _, anchor = link.partition("#")
        dest = (path.parent / target).resolve() if target else path
        if not dest.exists():
            if dest not in GENERATED:
                broken.append(f"{link} (no such file)")
            continue
        if anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{link} (no heading with anchor #{anchor})")
    assert not broken, f"{path.relative_to(REPO)}: broken links: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_starts_with_a_one_line_purpose(page):
    lines = [*page.read_text().splitlines(), "", "", ""]
    assert lines[0].startswith("# "), f"{page.name}: line 1 should be the page's title (# ...)"
    assert not lines[1].strip(), f"{page.name}: a blank line should follow the title"
    purpose = lines[2].strip()
    assert purpose and not re.match(r"[#|`!>*\-]|\d+\.", purpose), (
        f"{page.name}: line 3 should say in one sentence what the page is for")
    assert not lines[3].strip(), f"{page.name}: the purpose should be one line, then a blank line"


def test_readme_links_every_page():
    linked = {(REPO / link.partition("#")[0]).resolve() for link in _links(README)}
    unlinked = [p.name for p in PAGES if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"
