"""Serve the widgets' JavaScript and MathJax from the book itself, so that saved widget views (nglview)
render and formulas are typeset in the static pages without a CDN (offline).

- RequireJS and ``@jupyter-widgets/html-manager`` (its ``embed-amd.js`` bundle, for ipywidgets 8) come
  from the npm registry at pinned versions, checked against the registry's sha512 integrity and cached
  in ``~/.cache/opforce-tutorial/npm``.
- nglview's widget bundle comes from the installed nglview package (``share/jupyter/nbextensions``), so
  JavaScript and Python versions always match; it is served where html-manager looks for a module:
  ``<cdn>/nglview-js-widgets@<version>/dist/index.js``.

- MathJax 3 (``es5/tex-mml-chtml.js`` and its woff-v2 fonts) from the npm registry, pinned and checked
  the same way, lands in ``book/_widget_js/mathjax/``; ``_config.yml`` points ``mathjax_path`` at it.

Everything lands in ``book/_widget_js/`` (git-ignored), an extra static path of the book
(``_config.yml``), not ``_static/``, whose scripts Jupyter Book would inject into every page.
The book's ``widget_assets`` extension (``_ext/widget_assets.py``) runs this when a build starts, so
``jupyter-book build book`` needs nothing first; ``python book/widget_js.py`` runs it alone.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"
#: npm package: (version, sha512 integrity, file inside the tarball, name served)
PACKAGES = {
    "requirejs": ("2.3.8", "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
                  "package/require.js", "require.js"),
    "@jupyter-widgets/html-manager": ("1.0.15", "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
                                      "package/dist/embed-amd.js", "embed-amd.js"),
}
#: MathJax: (version, sha512 integrity); the combined TeX/MathML → CHTML component and its fonts are served.
MATHJAX = ("3.2.2", "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==")
OUT = Path(__file__).resolve().parent / "_widget_js" / "widgets"
MATHJAX_OUT = OUT.parent / "mathjax"
CACHE = Path.home() / ".cache" / "opforce-tutorial" / "npm"


def _tarball(name: str, version: str, integrity: str) -> bytes:
    leaf = name.split("/")[-1]
    path = CACHE / f"{leaf}-{version}.tgz"
    if path.exists():
        data = path.read_bytes()
    else:
        url = f"{REGISTRY}/{name}/-/{leaf}-{version}.tgz"
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != integrity:
        path.unlink(missing_ok=True)
        raise RuntimeError(f"{name}@{version}: sha512 {digest} does not match the pinned {integrity}; "
                           f"rerun `python book/widget_js.py` to download it again")
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (version, integrity, member, served) in PACKAGES.items():
        with tarfile.open(fileobj=io.BytesIO(_tarball(name, version, integrity)), mode="r:gz") as tar:
            (OUT / served).write_bytes(tar.extractfile(member).read())
    from nglview._frontend import __frontend_version__

    source = Path(sys.prefix) / "share" / "jupyter" / "nbextensions" / "nglview-js-widgets"
    if not (source / "index.js").exists():
        raise FileNotFoundError(f"{source / 'index.js'} is missing: reinstall nglview (pip install nglview)")
    target = OUT / f"nglview-js-widgets@{__frontend_version__}" / "dist"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.map", "extension.js"))
    print(f"widget JavaScript in {OUT}: {sorted(p.name for p in OUT.iterdir())}")
    shutil.rmtree(MATHJAX_OUT, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(_tarball("mathjax", *MATHJAX)), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("package/es5/")
            if member.isfile() and (name == "tex-mml-chtml.js" or name.startswith("output/chtml/fonts/woff-v2/")):
                target = MATHJAX_OUT / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    print(f"MathJax {MATHJAX[0]} in {MATHJAX_OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
