"""Run a scheduled function of the topology once, as EventBridge Scheduler would invoke it:
``python -m local.scheduled destroy_expired [EVENT_JSON]`` with the local cloud's environment
(``LocalCloud.run_scheduled`` does that). Prints the handler's result as JSON."""

from __future__ import annotations

import json
import sys

from archive.topology import SCHEDULED

from .runner import LambdaContext, LocalFunction, load_handler


def main(argv: list[str]) -> int:
    spec = {s.function: s for s in SCHEDULED}[argv[0]]
    event = json.loads(argv[1]) if len(argv) > 1 else {}
    module = load_handler(LocalFunction(spec.function, spec.handler_file, queue=""))
    result = module.handler(event, LambdaContext(spec.function, timeout_s=900))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
