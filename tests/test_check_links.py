""".ci/check_links.py: the link check of the built documentation finds missing pages and anchors,
follows no external link, and exits 1 only when a link is broken."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_links", ROOT / ".ci" / "check_links.py")
check_links = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_links)


def _page(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<html><body>{body}</body></html>", encoding="utf-8")


def test_missing_pages_and_anchors_are_reported_external_links_are_not(tmp_path, capsys):
    site = tmp_path / "site"
    _page(site / "theory" / "index.html", '<h2 id="known-phenomena">x</h2>')
    _page(site / "img" / "a.png", "")
    _page(
        site / "notebooks" / "02" / "index.html",
        '<a href="../../theory/#known-phenomena">ok</a> <img src="../../img/a.png">'
        '<a href="https://example.org/x.md">external</a> <a href="#top">own</a><p id="top"></p>'
        '<a href="../docs/theory.md#known-phenomena">broken page</a>'
        '<a href="../../theory/#no-such">broken anchor</a>',
    )
    assert check_links.main([str(site)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "notebooks/02/index.html: ../docs/theory.md#known-phenomena (no such file)",
        "notebooks/02/index.html: ../../theory/#no-such (no anchor #no-such)",
    ]
    _page(site / "notebooks" / "02" / "index.html", '<a href="../../theory/">fixed</a>')
    assert check_links.main([str(site)]) == 0
