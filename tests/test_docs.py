"""The documentation reads cleanly: inline code is closed, no page links to itself, and every
relative link reaches a file (and a heading) that exists (issue 31)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _paragraphs(page: Path) -> list[str]:
    """The page's prose paragraphs: code blocks (fenced or indented by 4) left out."""
    paragraphs, current, fenced = [], [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    ") and not current:
            continue
        if not line.strip():
            paragraphs.append(" ".join(current))
            current = []
        else:
            current.append(line)
    return [p for p in [*paragraphs, " ".join(current)] if p]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_inline_code_span_is_closed(page):
    for paragraph in _paragraphs(page):
        for row in paragraph.split(" | ") if paragraph.startswith("|") else [paragraph]:
            assert row.count("`") % 2 == 0, f"{page.name}: an odd backtick in: {row[:120]}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_links_reach_other_pages_and_their_headings(page):
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://", target) or target.startswith("#"):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve()
        assert linked != page.resolve() or anchor, f"{page.name} links to itself: {target}"
        assert linked.exists(), f"{page.name}: {target} does not exist"
        if anchor and linked.suffix == ".md":
            headings = {_anchor(line.lstrip("#")) for line in linked.read_text(encoding="utf-8").splitlines()
                        if line.startswith("#")}
            assert anchor in headings, f"{page.name}: {target}: no such heading"


def test_the_settings_table_of_configuration_md_is_the_schemas():
    """docs/configuration.md's table of settings is written from the schema's fields; a field whose
    meaning, names or lowest value changed (or a new setting) leaves the page behind until it is
    regenerated."""
    from transferlab import settings_doc
    from transferlab.composition import config_dir

    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    table = settings_doc.reference_table(config_dir())
    assert ("| `data.augment` | `pad_crop_flip` (data=digits: `pad_crop`; data=imagefolder: `random_resized_crop`) "
            "| `pad_crop_flip`, ") in table
    assert settings_doc.current_doc(page, table) == page, (
        f"docs/configuration.md's settings table is not current: run .venv/bin/python -m {settings_doc.__name__}")
    with pytest.raises(ValueError, match="has lost its lines"):
        settings_doc.current_doc(page.replace(settings_doc.END, ""), table)
