"""The authoring layer: what a pipeline file describes (assets, checks, tasks, partitions,
schedules, sensors, IO managers) and the context a step's function receives.

Cheap to import and free of storage: every step's worker imports it. Pipeline authors reach it
through `from engine import ...`, never by these module paths.
"""
