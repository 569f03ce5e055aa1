"""One Lambda function's event source mapping in a process of its own:
``python -m local.lambda_process NAME QUEUE_URL QUEUE_ARN``.

The local cloud runs functions marked ``own_process`` this way, so a test can SIGKILL the process
in the middle of an invocation, as a Lambda execution environment can die, and see that the
message comes back after its visibility timeout.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from .resources import client
from .runner import FUNCTIONS, QueuePoller


def main(argv: list[str]) -> None:
    name, queue_url, queue_arn = argv
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    function = next(f for f in FUNCTIONS if f.name == name)
    poller = QueuePoller(function, client("sqs", os.environ["AWS_ENDPOINT_URL"]), queue_url, queue_arn)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    poller.start()
    print(f"{name} polling {queue_url}", flush=True)
    stopped.wait()
    poller.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
