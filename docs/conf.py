"""Sphinx configuration of the reliablelink documentation.

Build nitpicky (every cross-reference must resolve) with warnings as errors::

    .venv/bin/sphinx-build -n -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import reliablelink

project = "reliablelink"
author = "the reliablelink maintainers"
copyright = "the reliablelink maintainers"
release = reliablelink.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_inv", "Thumbs.db", ".DS_Store"]

# -- intersphinx ---------------------------------------------------------------------------
# Links to Python's and Trio's documentation. The builds (CI included) have no web access,
# so the inventories are kept in the repository (docs/_inv/, see docs/_inv/README.md for
# where they come from and how to refresh them); the URLs are only where the links point.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", "_inv/python.inv"),
    "trio": ("https://trio.readthedocs.io/en/stable", "_inv/trio.inv"),
}

# Every cross-reference must resolve (``-n``), except these, whose documentation has no
# inventory here: hypothesis (the return type of reliablelink.testing.strategies).
nitpicky = True
nitpick_ignore = [
    ("py:class", "hypothesis.strategies.SearchStrategy"),
    # prometheus_client publishes no Sphinx inventory.
    ("py:class", "CollectorRegistry"),
    ("py:class", "Collector"),
]

# -- MyST (Markdown pages) ---------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist", "substitution"]
myst_substitutions = {"release": release}
# Anchors for headings up to level 3, so pages can link to "protocol.md#handshake".
myst_heading_anchors = 3

# -- autodoc / napoleon ------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" sections become ``.. attribute::`` entries (linkable, e.g.
# :attr:`reliablelink.SessionStats.reconnects`). Dataclasses are therefore documented
# without ``:undoc-members:``: their fields would otherwise be declared twice.
napoleon_use_ivar = False
# Annotations are strings (``from __future__ import annotations``); resolve the public
# names to where this reference documents them, not to the private modules defining them.
# (Only names that never appear inside a subscripted type such as ``list[X]``: Sphinx
# renders an alias there as ``TypeAliasForwardRef('...')``.)
autodoc_type_aliases = {
    "LinkState": "reliablelink.LinkState",
    "SessionStats": "reliablelink.SessionStats",
    "LedgerResult": "reliablelink.testing.LedgerResult",
    "StreamOptions": "reliablelink.transports.StreamOptions",
    "Transport": "reliablelink.transports.Transport",
}

# Objects the library creates and hands to the application: their constructors are
# internal, so the reference shows no constructor signature for them.
_NOT_CONSTRUCTED_BY_USERS = {
    "reliablelink.Server",
    "reliablelink.Session",
    "reliablelink.SessionStats",
    "reliablelink.LinkState",
    "reliablelink.testing.LedgerResult",
    "reliablelink.testing.MemoryConnection",
    "reliablelink.transports.Transport",
}


def _dataclass_factory_defaults(  # noqa: PLR0917 (Sphinx calls it with these)
    app: Any, what: str, name: str, obj: Any, options: Any, signature: str | None, return_annotation: str | None
) -> tuple[str, str | None] | None:
    # A dataclass field with a default_factory shows as "=<factory>", which is not Python:
    # Sphinx then cannot parse the signature (a nitpicky warning). Show the value the factory
    # makes instead, e.g. "unacked: list[tuple[int, bytes]] = []".
    if what != "class" or not signature or "<factory>" not in signature or not dataclasses.is_dataclass(obj):
        return None
    for f in dataclasses.fields(obj):
        if f.default_factory is not dataclasses.MISSING:
            shown = repr(f.default_factory()).replace("\\", "\\\\")  # a replacement string
            signature = re.sub(rf"(\b{f.name}: [^=]*?)\s*=\s*<factory>", rf"\g<1> = {shown}", signature)
    return signature, return_annotation


def _hide_internal_constructors(  # noqa: PLR0917 (Sphinx calls it with these)
    app: Any, what: str, name: str, obj: Any, options: Any, signature: str | None, return_annotation: str | None
) -> tuple[str, str | None] | None:
    if what == "class" and name in _NOT_CONSTRUCTED_BY_USERS:
        return "", None
    return None


# -- HTML --------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"reliablelink {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Trio message sessions that survive network faults",
    "fixed_sidebar": True,
}

# -- benchmarks page ---------------------------------------------------------------------
# benchmarks.md includes ../benchmarks/results/throughput.md. That file is produced by
# benchmarks/bench_throughput.py and may be absent in a fresh checkout; an include of a
# missing file would be a build warning (an error with -W), so the include is replaced by a
# note when the file does not exist.
_DOCS = Path(__file__).resolve().parent
_RESULTS = _DOCS.parent / "benchmarks" / "results" / "throughput.md"
_INCLUDE = re.compile(r"```\{include\} \.\./benchmarks/results/throughput\.md\n.*?```\n", re.DOTALL)
_MISSING = """\
```{note}
No results yet: `benchmarks/results/throughput.md` does not exist in this checkout.
Run `python benchmarks/bench_throughput.py` and rebuild the documentation.
```
"""


def _benchmarks_without_results(app: Any, docname: str, source: list[str]) -> None:
    if docname == "benchmarks" and not _RESULTS.exists():
        source[0] = _INCLUDE.sub(_MISSING, source[0])


def setup(app: Any) -> dict[str, Any]:
    app.connect("source-read", _benchmarks_without_results)
    app.connect("autodoc-process-signature", _hide_internal_constructors)
    app.connect("autodoc-process-signature", _dataclass_factory_defaults)
    return {"parallel_read_safe": True}
