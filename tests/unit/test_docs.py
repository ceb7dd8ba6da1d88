"""Docs that a newcomer follows must stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from dailyrec.contract import SCHEMAS

REPO = Path(__file__).resolve().parents[2]


def test_contract_doc_lists_every_column():
    doc = (REPO / "docs" / "data-contract.md").read_text()
    for name, schema in SCHEMAS.items():
        for f in schema:
            assert re.search(rf"\| `{f.name}` \| {re.escape(str(f.type))} \|", doc), f"{name}.{f.name} ({f.type})"


def test_readme_opens_with_the_two_commands():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert blocks, "README has no command block"
    first = blocks[0]
    assert "./dev demo" in first and "./dev test" in first
    ci = (REPO / ".ci" / "run").read_text()
    assert "./dev test" in ci


def test_docs_links_resolve():
    for md in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", md.read_text()):
            assert (md.parent / target).exists(), f"{md.name} links to missing {target}"
