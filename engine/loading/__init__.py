"""The loading layer: reading a project (its `dagtop.toml` and pipeline files) into a
`Manifest` of plain data, in a child process, and watching the files for changes.

Below it only authoring; nothing here touches storage.
"""
