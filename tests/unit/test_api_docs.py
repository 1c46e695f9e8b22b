"""Every public name of every public module is in the API reference (docs/api.rst).

A name counts as documented when a directive of docs/api.rst declares it under its public
path: ``.. autoclass:: reliablelink.transports.TCPTransport``, or ``.. py:exception::
StoreError`` with ``:module: reliablelink``. So a name added to ``__all__`` (or to a package
``__init__`` without ``__all__``) fails this test until the reference documents it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import reliablelink

API_RST = Path(__file__).resolve().parents[2] / "docs" / "api.rst"

# Modules that are not library API: the demo application is documented as the
# ``reliablelink demo`` command (docs/tutorial.md), not imported by applications.
NOT_API = {"reliablelink.demo"}

# Public names a module serves without listing them in ``__all__``: the WebSocket
# transport is imported on first use (it needs the optional ``[ws]`` extra).
LAZY = {"reliablelink.transports": ["WebSocketTransport"]}


def public_modules() -> list[ModuleType]:
    """reliablelink and each of its modules and packages whose path has no ``_`` part."""
    found = [reliablelink]
    todo = [reliablelink]
    while todo:
        package = todo.pop()
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            if info.name.rsplit(".", 1)[1].startswith("_") or info.name in NOT_API:
                continue
            module = importlib.import_module(info.name)
            found.append(module)
            if info.ispkg:
                todo.append(module)
    return found


def public_names(module: ModuleType) -> list[str]:
    """``__all__``; without it, the names the module defines or re-exports from reliablelink."""
    names: list[str] = list(getattr(module, "__all__", []))
    if not hasattr(module, "__all__"):
        names = [
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and not inspect.ismodule(value)
            and getattr(value, "__module__", "").startswith("reliablelink")
        ]
    return sorted({*names, *LAZY.get(module.__name__, [])})


# A directive and the name it declares, with or without an explicit signature.
_DIRECTIVE = re.compile(r"^(\s*)\.\. (auto\w+|py:\w+|currentmodule|module)::\s*([\w.]+)\s*(\(.*)?$")
_MODULE_OPTION = re.compile(r"^\s+:module:\s*([\w.]+)\s*$")


def documented_names(text: str) -> set[str]:
    """The full names the directives of an reST file declare (autodoc and py domain)."""
    names: set[str] = set()
    current = ""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _DIRECTIVE.match(line)
        if not match:
            continue
        _, kind, name, _ = match.groups()
        if kind in {"automodule", "currentmodule", "module", "py:module", "py:currentmodule"}:
            current = name
            names.add(name)
            continue
        if kind.startswith("auto"):
            # autodoc takes the names in api.rst as full paths (relative ones would be
            # resolved against the current module).
            names.add(name if name.startswith("reliablelink") else f"{current}.{name}")
            continue
        module = current
        for option in lines[i + 1 :]:
            if not option.strip().startswith(":"):
                break
            found = _MODULE_OPTION.match(option)
            if found:
                module = found.group(1)
        # The py domain puts a dotted name under the current module as well.
        names.add(f"{module}.{name}")
    return names


def test_the_directive_parser_reads_full_names_and_module_options() -> None:
    text = """
.. autofunction:: reliablelink.connect(url: str, *, client_id: str) -> Session

.. automodule:: reliablelink.transports

.. py:class:: MemoryTransport
   :module: reliablelink.transports

.. py:exception:: StoreError
   :no-index:
   :module: reliablelink

.. py:data:: StreamHandler
"""
    assert documented_names(text) == {
        "reliablelink.connect",
        "reliablelink.transports",
        "reliablelink.transports.MemoryTransport",
        "reliablelink.StoreError",
        "reliablelink.transports.StreamHandler",
    }


def test_every_public_name_is_in_the_api_reference() -> None:
    documented = documented_names(API_RST.read_text(encoding="utf-8"))
    modules = public_modules()
    expected = {f"{m.__name__}.{name}" for m in modules for name in public_names(m)}
    # Packages and names that must be found, so that the discovery itself cannot miss them.
    assert {"reliablelink.stores", "reliablelink.transports", "reliablelink.testing"} <= {m.__name__ for m in modules}
    assert {"reliablelink.parse_key", "reliablelink.transports.get_transport"} <= expected
    missing = sorted(expected - documented)
    assert not missing, (
        f"public names missing from {API_RST.name}: {', '.join(missing)}. Document each one there "
        "(an autodoc directive with its full name, or a py: directive with :module:)."
    )


def test_every_public_module_is_in_the_api_reference() -> None:
    documented = documented_names(API_RST.read_text(encoding="utf-8"))
    # The package itself is the page's subject, not an automodule of its own.
    missing = sorted(m.__name__ for m in public_modules()[1:] if m.__name__ not in documented)
    assert not missing, f"modules without an automodule in {API_RST.name}: {missing}"
