"""A Sphinx extension of this book: the JavaScript and MathJax it serves are in place before it builds.

``book/widget_js.py`` fetches them (pinned, sha512-checked, cached) into ``book/_widget_js/``, an extra
static path of the book. Running it when the configuration is read (before Sphinx checks its static
paths) makes ``jupyter-book build book`` work on
its own, as ``make book`` does; files already in place are kept (nothing is fetched twice).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

BOOK = Path(__file__).resolve().parents[1]


def _fetch(app, config) -> None:
    spec = importlib.util.spec_from_file_location("widget_js", BOOK / "widget_js.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if module.main() != 0:
        raise RuntimeError("book/widget_js.py could not put the widgets' JavaScript and MathJax in book/_widget_js/")


def setup(app):
    # before Sphinx checks that html_static_path exists (its own config-inited handler, priority 800)
    app.connect("config-inited", _fetch, priority=100)
    return {"parallel_read_safe": True}
