"""The README and the pages under docs/: every relative link and image resolves, and the README stays a manual."""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 300

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1", re.DOTALL)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
HTML_TARGET = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*\"([^\"]+)\"", re.IGNORECASE)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


class Link(NamedTuple):
    page: Path  # the Markdown file the link is in
    target: str  # as written


def pages() -> list[Path]:
    """The documentation: the README, the changelog and every Markdown page under docs/."""
    found = [README, *sorted((ROOT / "docs").rglob("*.md"))]
    changelog = ROOT / "CHANGELOG.md"
    return found + [changelog] if changelog.exists() else found


def prose(text: str) -> str:
    """``text`` without fenced code blocks and code spans, where brackets and parentheses are code, not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(page: Path) -> Iterator[Link]:
    text = prose(page.read_text(encoding="utf-8"))
    for pattern in (INLINE_LINK, REFERENCE, HTML_TARGET):
        for match in pattern.finditer(text):
            yield Link(page, match.group(1))


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``page``: lower case, punctuation dropped, spaces as hyphens, and
    ``-1``, ``-2``, ... after repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    for title in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        title = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link in a heading counts by its text
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken(link: Link) -> str | None:
    """Why ``link`` does not resolve, or ``None`` where it does (external links are not checked)."""
    if EXTERNAL.match(link.target):
        return None
    path, _, anchor = link.target.partition("#")
    target = (link.page.parent / path).resolve() if path else link.page
    if not target.exists():
        return f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target} does not exist"
    if anchor and target.suffix == ".md" and anchor not in anchors(target):
        return f"no heading #{anchor} in {target.relative_to(ROOT)}"
    return None


def broken_links(documents: list[Path]) -> list[str]:
    return [
        f"{link.page.relative_to(ROOT)}: ({link.target}): {why}"
        for page in documents
        for link in links(page)
        if (why := broken(link)) is not None
    ]


def test_every_relative_link_and_image_resolves() -> None:
    broken = broken_links(pages())
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_documentation_has_links_to_check() -> None:
    found = [link for page in pages() for link in links(page)]
    assert sum(link.target.endswith(".png") for link in found) >= 10  # the plots of docs/results/
    assert sum(link.target.startswith("docs/") for link in found if link.page == README) >= 5


def test_a_broken_link_image_or_anchor_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path = tmp_path.resolve()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "plot.png").write_bytes(b"")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# A page\n\n## The `first` part\n\n"
        "[fine](plot.png) ![fine](./plot.png) [fine](#the-first-part) [fine](https://example.org/missing)\n"
        "`[code, not a link](missing.md)`\n\n```\n[code](missing.md)\n```\n\n"
        "[gone](missing.md) ![gone](../docs/missing.png) [no heading](page.md#second-part) "
        '<img src="nowhere.png">\n\n[ref]: elsewhere.md\n'
    )
    assert [line.split(": ", 1)[1] for line in broken_links([page])] == [
        "(missing.md): docs/missing.md does not exist",
        "(../docs/missing.png): docs/missing.png does not exist",
        "(page.md#second-part): no heading #second-part in docs/page.md",
        "(elsewhere.md): docs/elsewhere.md does not exist",
        "(nowhere.png): docs/nowhere.png does not exist",
    ]


def test_every_page_and_image_under_docs_is_linked() -> None:
    linked = set()
    for page in pages():
        for link in links(page):
            path = link.target.partition("#")[0]
            if path and not EXTERNAL.match(link.target):
                linked.add((page.parent / path).resolve())
    docs = ROOT / "docs"
    unlinked = [
        str(path.relative_to(ROOT))
        for path in sorted(docs.rglob("*"))
        if path.suffix in {".md", ".png", ".gif", ".jpg", ".svg"} and path.resolve() not in linked
    ]
    assert unlinked == []


def test_the_readme_stays_a_manual() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move details to docs/"


def test_the_readme_test_command_is_what_ci_runs() -> None:
    """The quick start's second command is the one ``.ci/run`` runs, extras and pin alike."""
    readme = README.read_text(encoding="utf-8")
    (command,) = [line for line in readme.splitlines() if line.endswith("&& python -m pytest")]
    install, _, test = command.partition(" && ")
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    ci_install = next(line for line in ci if line.startswith("pip install") and " -e " in line)  # the package's
    options = {"--quiet", "--disable-pip-version-check"}
    assert [word for word in shlex.split(ci_install) if word not in options] == shlex.split(install)
    assert test in ci


def test_the_readme_shows_the_python_example_as_it_is() -> None:
    """The README's Python API section holds ``examples/train_python.py`` word for word, so that the two never drift."""
    example = (ROOT / "examples" / "train_python.py").read_text(encoding="utf-8")
    assert f"```python\n{example}```" in README.read_text(encoding="utf-8")
