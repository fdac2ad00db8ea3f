"""The history layer: a run request planned into run and step rows, re-run and cancel of what
is recorded, and the reads that turn rows into answers (run views, partition status, lineage
and staleness).
"""
