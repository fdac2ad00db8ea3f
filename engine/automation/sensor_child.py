"""One evaluation of a custom sensor, in a process of its own: `python -m
engine.automation.sensor_child`, its request as JSON on stdin.

User code never runs in the engine: this process imports the sensor's pipeline file, calls the
sensor, and writes one JSON object, its answer, on what was stdout when it started. What the
sensor prints, and its `context.log`, go to stderr, which the engine keeps the end of with
the tick. It touches no storage: the engine records the answer (or the error).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

TRACEBACK_LIMIT = 4000  # characters of a traceback kept


def _find(name: str) -> Any:
    from engine.authoring import definitions as d
    from engine.authoring.sensors import SensorDef

    for item in d._registry.reset():
        if isinstance(item, SensorDef) and item.name == name:
            return item
    return None


def evaluate(request: dict[str, Any]) -> dict[str, Any]:
    """Import the sensor's file, call it, and answer (never raises for the sensor's faults)."""
    from engine.authoring.sensors import SensorContext, SensorResultError
    from engine.authoring.sensors import evaluate as call
    from engine.loading.modules import import_pipeline_module

    name = request["name"]
    try:
        import_pipeline_module(Path(request["root"]), request["file"])
        defn = _find(name)
        if defn is None:
            return {"error": f"sensor {name!r} is no longer defined in {request['file']}"}
        context = SensorContext(name, request.get("cursor"), request.get("last_tick_at"))
        return {"result": call(defn, context)}
    except SensorResultError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - any failure of user code is the tick's error
        text = "".join(traceback.format_exception(exc))
        return {
            "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
            "traceback": text[-TRACEBACK_LIMIT:],
        }


def main() -> None:
    # The answer goes on the stdout we were given; the sensor's prints go to stderr with its log.
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    request = json.loads(sys.stdin.read())
    answer = evaluate(request)
    try:
        data = json.dumps(answer)
    except (TypeError, ValueError) as exc:
        data = json.dumps({"error": f"the sensor's answer is not JSON: {exc}"})
    with os.fdopen(answer_fd, "w") as out:
        out.write(data)


if __name__ == "__main__":
    main()
