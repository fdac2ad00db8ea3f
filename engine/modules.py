"""Importing pipeline files as modules, the same way in the loader and in every worker.

Each file imports as `dagtop_pipelines.<relative.dotted.path>`: a namespace of our own, so a
pipeline named `json.py` or `test.py` never shadows the standard library, and pickled values
of classes defined in pipeline files unpickle in any worker. The folder is also put at the end
of `sys.path`, so pipeline files can import their own helper modules by plain name.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

NAMESPACE = "dagtop_pipelines"


def module_name_for(file: str) -> str:
    """`sub/train.py` -> `dagtop_pipelines.sub.train`."""
    parts = list(Path(file).with_suffix("").parts)
    return ".".join([NAMESPACE, *parts])


def install_namespace(root: Path) -> None:
    root_str = str(root)
    existing = sys.modules.get(NAMESPACE)
    if existing is None or list(getattr(existing, "__path__", [])) != [root_str]:
        ns = types.ModuleType(NAMESPACE)
        ns.__path__ = [root_str]
        sys.modules[NAMESPACE] = ns
    if root_str not in sys.path:
        sys.path.append(root_str)


def import_pipeline_module(root: Path, file: str) -> types.ModuleType:
    """Import (or re-import) one pipeline file."""
    install_namespace(root)
    name = module_name_for(file)
    sys.modules.pop(name, None)
    return importlib.import_module(name)
