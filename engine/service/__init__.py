"""The service layer: the `Engine` that composes executor, automation and reloads in one
process (embedded in the UI or as `dagtop daemon`), its lease on the home folder, and the
local socket commands reach it by.
"""
