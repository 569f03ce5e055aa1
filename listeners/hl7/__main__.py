"""Entry point of the HL7 listener container: ``python -m listeners.hl7``."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from archive.config import Settings

from .app import HL7ListenerSettings, build


async def serve() -> None:
    listener, audit_trail = build(Settings.from_env(), HL7ListenerSettings.from_env())
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    await listener.start()
    await stopped.wait()
    await listener.stop()
    audit_trail.close()


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve())


if __name__ == "__main__":
    main()
