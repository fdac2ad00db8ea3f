"""Importing pipeline files as modules, the same way in the loader and in every worker.

Each file imports as `dagtop_pipelines.<name>`, where the name is its path relative to the
pipelines folder with `/` written as `__` (`sub/train.py` -> `dagtop_pipelines.sub__train`): a
namespace of our own, so a pipeline named `json.py` never shadows the standard library, a file
`sub.py` beside a folder `sub/` is no conflict, and pickled values of classes defined in
pipeline files unpickle in any worker (a finder on `sys.meta_path` maps names back to files).
The folder is also put at the end of `sys.path`, so pipeline files can import their own helper
modules by plain name.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

NAMESPACE = "dagtop_pipelines"
_SEP = "__"


def module_name_for(file: str) -> str:
    """`sub/train.py` -> `dagtop_pipelines.sub__train`."""
    return f"{NAMESPACE}.{_SEP.join(Path(file).with_suffix('').parts)}"


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        prefix = NAMESPACE + "."
        if not fullname.startswith(prefix):
            return None
        tail = fullname[len(prefix) :]
        if "." in tail:
            return None
        # A root file whose own name has "__" wins over a nested path of the same spelling.
        for rel in (tail + ".py", tail.replace(_SEP, "/") + ".py"):
            candidate = self.root / rel
            if candidate.is_file():
                return importlib.util.spec_from_file_location(fullname, candidate)
        return None


class _Namespace(types.ModuleType):
    """The `dagtop_pipelines` package, which remembers the folder its modules come from."""

    __dagtop_root__: str


def install_namespace(root: Path) -> None:
    root_str = str(root)
    ns = sys.modules.get(NAMESPACE)
    if ns is None or getattr(ns, "__dagtop_root__", None) != root_str:
        ns = _Namespace(NAMESPACE)
        ns.__path__ = []  # a package with no folder: only our finder resolves its modules
        ns.__dagtop_root__ = root_str
        sys.modules[NAMESPACE] = ns
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Finder)]
        sys.meta_path.insert(0, _Finder(root))
    if root_str not in sys.path:
        sys.path.append(root_str)


def import_pipeline_module(root: Path, file: str) -> types.ModuleType:
    """Import (or re-import) one pipeline file."""
    install_namespace(root)
    name = module_name_for(file)
    sys.modules.pop(name, None)
    return importlib.import_module(name)
