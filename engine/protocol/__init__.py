"""The messages dagtop's processes send each other, each with its type and its wire form.

Standard library only. Two modules, because they are paid for by different processes:
`worker` (a step's spec and the events its worker sends back, imported by every spawned worker
and Dask task, so its types exist for the type checker only) and `commands` (what the CLI and
the UI ask of an engine over any link, and its answers, defined at run time because a link
checks a request's required fields). Importing this package imports neither.
"""
