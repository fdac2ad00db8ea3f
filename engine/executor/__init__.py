"""The executor layer: every step attempt as a monitored child process (forked locally or on a
Dask worker), its events and resources recorded, its end settled in exactly one state."""
