"""Dynamic partitions: their keys, kept in storage, and definitions bound to them.

A pipeline file says only that an asset is partitioned by `DynamicPartitions("customers")`;
the keys are rows (`dagtop keys add`, `context.add_partitions`). Whatever plans runs or reads
partitions binds the manifest to the keys as stored in its own transaction (`bind`), so a key
added in that transaction (by a sensor's tick) counts at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sqlmodel import Session

from engine.authoring.partitions import InvalidPartitionKey, check_dynamic_key
from engine.errors import PartitionError, suggest
from engine.loading.manifest import Manifest
from engine.protocol.commands import KeysChanged
from engine.storage import repo


def definitions(manifest: Manifest) -> dict[str, list[str]]:
    """Each DynamicPartitions name the manifest uses, and the assets partitioned by it."""
    out: dict[str, list[str]] = {}
    for spec in manifest.assets.values():
        name = spec.dynamic
        if name is not None:
            out.setdefault(name, []).append(spec.name)
    return out


def bind(session: Session, manifest: Manifest) -> Manifest:
    """The manifest with each dynamically partitioned asset knowing its current keys (the same
    manifest when it has none: the common case costs one pass over the assets)."""
    names = definitions(manifest)
    if not names:
        return manifest
    keys = repo.dynamic_keys(session, names)
    assets = dict(manifest.assets)
    for name, owners in names.items():
        for asset in owners:
            spec = assets[asset]
            parts = {**(spec.partitions or {}), "keys": keys[name]}
            assets[asset] = dataclasses.replace(spec, partitions=parts)
    return dataclasses.replace(manifest, assets=assets)


def check_keys(keys: Sequence[str]) -> list[str]:
    """Keys as a user gave them, checked as every key is.

    Raises:
        PartitionError: none given, or one is empty or holds a control character.
    """
    if not keys:
        raise PartitionError("name at least one key")
    try:
        return [check_dynamic_key(key) for key in keys]
    except InvalidPartitionKey as exc:
        raise PartitionError(str(exc)) from None


def known_definition(manifest: Manifest, name: str, stored: Sequence[str] = ()) -> None:
    """Refuse a DynamicPartitions name no asset uses (a typo would store keys nobody reads).

    Raises:
        PartitionError: no asset is partitioned by it (and no key was ever stored under it).
    """
    names = definitions(manifest)
    if name in names or name in stored:
        return
    hint = suggest(name, names) or (
        f" (known: {', '.join(sorted(names))})" if names else " (no asset uses DynamicPartitions)"
    )
    raise PartitionError(f"no asset is partitioned by DynamicPartitions {name!r}{hint}")


def change(
    db: Any, manifest: Manifest, op: str, name: str, keys: Sequence[str], now: float
) -> KeysChanged:
    """`dagtop keys add|remove NAME KEY...`: one transaction; answers what changed and the keys
    there now.

    Raises:
        PartitionError: an unknown definition, a bad key, or an unknown operation.
    """
    from engine.storage.db import session_scope

    if op not in ("add", "remove"):
        raise PartitionError(f"keys are added or removed, not {op!r}")
    with session_scope(db) as session:
        stored = [name] if repo.dynamic_key_count(session, name) else []
        known_definition(manifest, name, stored)
        changed = (add if op == "add" else remove)(session, name, keys, now)
        return {"changed": changed, "keys": repo.dynamic_keys(session, [name])[name]}


def add(session: Session, name: str, keys: Sequence[str], now: float) -> list[str]:
    """Add keys (existing ones are left as they are); returns those that were new."""
    return repo.add_dynamic_keys(session, name, check_keys(keys), now)


def remove(session: Session, name: str, keys: Sequence[str], now: float) -> list[str]:
    """Remove keys (their runs and values stay); returns those that were there."""
    return repo.remove_dynamic_keys(session, name, check_keys(keys), now)
