"""Check the relative links of a built MkDocs site: every href/src that points inside the site must
name a file that exists, and its #anchor an id on that page.

    python .ci/check_links.py site

Links to other hosts (http:, https:, mailto:, data:, javascript:) are not followed: the check needs
no network. Exit status 1 and one line per broken link (page: link) when any is broken, else 0.
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

EXTERNAL = ("http:", "https:", "mailto:", "data:", "javascript:", "tel:", "ftp:")


class _Page(HTMLParser):
    """The links (href, src) and the ids (id, name) of one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if value is None:
                continue
            if key in ("href", "src") and tag not in ("base",):
                self.links.append(value)
            elif key == "id" or (key == "name" and tag == "a"):
                self.ids.add(value)


def _parse(path: Path, cache: dict[Path, _Page]) -> _Page:
    if path not in cache:
        page = _Page()
        page.feed(path.read_text(encoding="utf-8", errors="replace"))
        cache[path] = page
    return cache[path]


def _target(site: Path, page: Path, url: str) -> tuple[Path, str] | None:
    """(the file a relative link names, its fragment), or None for a link outside the site."""
    parts = urlsplit(url)
    if url.lower().startswith(EXTERNAL) or parts.scheme or parts.netloc:
        return None
    path = unquote(parts.path)
    if not path:
        return page, unquote(parts.fragment)
    target = (site / path.lstrip("/")) if path.startswith("/") else (page.parent / path)
    if path.endswith("/") or target.is_dir():
        target = target / "index.html"
    return target, unquote(parts.fragment)


def broken_links(site: Path) -> list[str]:
    """``page: link (why)`` for every broken relative link of the site in ``site``."""
    site = site.resolve()
    cache: dict[Path, _Page] = {}
    broken = []
    for page in sorted(site.rglob("*.html")):
        for url in _parse(page, cache).links:
            found = _target(site, page, url)
            if found is None:
                continue
            target, fragment = found
            target = Path(*target.parts).resolve()
            where = page.relative_to(site)
            if not target.is_file() or site not in target.parents:
                broken.append(f"{where}: {url} (no such file)")
            elif (
                fragment and target.suffix == ".html" and fragment not in _parse(target, cache).ids
            ):
                broken.append(f"{where}: {url} (no anchor #{fragment})")
    return broken


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python .ci/check_links.py SITE_DIR (a built MkDocs site)", file=sys.stderr)
        return 2
    broken = broken_links(Path(argv[0]))
    for line in broken:
        print(line)
    pages = len(list(Path(argv[0]).rglob("*.html")))
    print(f"{len(broken)} broken links in {pages} pages", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
