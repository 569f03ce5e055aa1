"""A delaying HTTP proxy in front of the local stand-in: AWS-shaped latency for ``make bench``.

Our processes reach S3, DynamoDB and SQS over HTTP through one endpoint URL. Pointed at this
proxy instead of the stand-in, every call is classified by service and operation (S3 PUT, GET,
HEAD, COPY, LIST, ...; DynamoDB GetItem, Query, TransactWriteItems, ...; SQS SendMessage,
ReceiveMessage, ...) and answered no earlier than a latency drawn for it from a log-normal
distribution with the published figures' median and 99th percentile (``AWS_PROFILE``, sources in
docs/benchmarks.md). The clock starts when the whole request has been received, as AWS's
first-byte latency does; the response's first byte is sent when both the drawn latency has passed
and the stand-in has answered (so a stand-in slower than AWS still shows, never hidden).

- Bodies stream through in 64 KiB pieces both ways; only DynamoDB's small JSON bodies are kept,
  to count ``ScannedCount`` and ``Count`` of each Query and Scan per table and index.
- The draws come from one seeded ``random.Random`` per operation: the same seed gives the same
  sequence of latencies for each operation.
- ``Expect: 100-continue`` is answered by the proxy itself (the upstream never sees it).
- S3 buckets whose names end in ``--x-s3`` (the S3 Express One Zone directory bucket suffix) or
  match a configured pattern get the Express One Zone profile instead of S3 Standard's.
- A few control paths on the same port (``/__latency__/...``, not a valid bucket name) switch the
  profile at run time and read or reset the counters: the benchmark runs both modes, local
  stand-in as-is and AWS-shaped, against the same running archive.

``python -m local.latency_proxy --upstream http://127.0.0.1:5000 --port 5001 --profile aws``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import random
import re
import threading
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

LOG = logging.getLogger("archive.local.latency")
CHUNK = 64 * 1024
CONTROL_PREFIX = "/__latency__/"
EXPRESS_SUFFIX = "--x-s3"
# z of the 99th percentile of the standard normal distribution.
_Z99 = 2.3263478740


@dataclass(frozen=True)
class Latency:
    """A log-normal latency given by its median and 99th percentile, in milliseconds."""

    median_ms: float
    p99_ms: float

    @property
    def sigma(self) -> float:
        return math.log(self.p99_ms / self.median_ms) / _Z99

    def draw(self, rng: random.Random) -> float:
        """One latency in seconds."""
        return self.median_ms * math.exp(rng.gauss(0.0, self.sigma)) / 1000.0


# Within one Region, from a client in the same Region (sources and reasoning: docs/benchmarks.md).
_S3_STANDARD = {
    "PUT": Latency(30, 120),
    "GET": Latency(25, 100),
    "HEAD": Latency(15, 60),
    "COPY": Latency(40, 150),
    "LIST": Latency(30, 120),
    "DELETE": Latency(20, 80),
    "POST": Latency(30, 120),
    "OTHER": Latency(20, 80),
}
_S3_EXPRESS = {op: Latency(4, 10) for op in _S3_STANDARD}
_DYNAMODB = {
    "GetItem": Latency(3, 9),
    "BatchGetItem": Latency(5, 15),
    "PutItem": Latency(5, 14),
    "UpdateItem": Latency(5, 14),
    "DeleteItem": Latency(5, 14),
    "BatchWriteItem": Latency(8, 25),
    "Query": Latency(4, 12),
    "Scan": Latency(6, 20),
    "TransactGetItems": Latency(6, 18),
    "TransactWriteItems": Latency(10, 30),
    "OTHER": Latency(5, 15),
}
_SQS = {
    "SendMessage": Latency(18, 45),
    "SendMessageBatch": Latency(20, 50),
    "ReceiveMessage": Latency(18, 45),
    "DeleteMessage": Latency(15, 40),
    "DeleteMessageBatch": Latency(15, 40),
    "ChangeMessageVisibility": Latency(15, 40),
    "OTHER": Latency(15, 40),
}

AWS_PROFILE: dict[str, Latency] = {
    **{f"s3:{op}": lat for op, lat in _S3_STANDARD.items()},
    **{f"s3express:{op}": lat for op, lat in _S3_EXPRESS.items()},
    **{f"dynamodb:{op}": lat for op, lat in _DYNAMODB.items()},
    **{f"sqs:{op}": lat for op, lat in _SQS.items()},
    "other:OTHER": Latency(10, 40),  # Secrets Manager, KMS, ...: rare calls, a plausible figure
}
PROFILES: dict[str, dict[str, Latency]] = {"none": {}, "aws": AWS_PROFILE}


@dataclass(frozen=True)
class Operation:
    """What one request is: ``service`` (s3, s3express, dynamodb, sqs, other, control) and ``name``."""

    service: str
    name: str
    resource: str = ""  # the S3 bucket; DynamoDB's table is read from the body

    @property
    def key(self) -> str:
        return f"{self.service}:{self.name}"


def classify(
    method: str,
    target: str,
    headers: Mapping[str, str],
    express_buckets: Iterable[re.Pattern[str]] = (),
) -> Operation:
    """Service and operation of one request to the stand-in (``headers`` with lower-case names).

    DynamoDB and SQS (JSON protocol) name the operation in ``X-Amz-Target``; S3 (path-style, as
    botocore addresses a custom endpoint) is told by method, path, query and copy-source header.
    """
    parts = urlsplit(target)
    if parts.path.startswith(CONTROL_PREFIX):
        return Operation("control", parts.path[len(CONTROL_PREFIX) :])
    amz_target = headers.get("x-amz-target", "")
    if amz_target:
        prefix, _, action = amz_target.partition(".")
        if prefix.startswith("DynamoDB"):
            return Operation("dynamodb", action)
        if prefix == "AmazonSQS":
            return Operation("sqs", action)
        return Operation("other", "OTHER", prefix)
    query = parse_qs(parts.query, keep_blank_values=True)
    if "Action" in query:  # the query protocol (older SQS clients, STS)
        action = query["Action"][0]
        return Operation("sqs" if "Message" in action or "Queue" in action else "other", action)
    if parts.path.startswith("/moto-api"):
        return Operation("control", "moto-api")
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        return Operation("s3", "LIST")  # ListBuckets
    bucket = segments[0]
    service = "s3express" if _is_express(bucket, express_buckets) else "s3"
    has_key = len(segments) > 1
    if method == "PUT":
        name = "COPY" if "x-amz-copy-source" in headers else ("PUT" if has_key else "OTHER")
    elif method == "GET":
        if has_key:
            name = "GET"
        elif not query or {"list-type", "prefix", "versions", "delimiter"} & query.keys():
            name = "LIST"
        else:
            name = "OTHER"  # bucket configuration reads
    elif method == "HEAD":
        name = "HEAD"
    elif method == "DELETE":
        name = "DELETE"
    elif method == "POST":
        name = "POST"
    else:
        name = "OTHER"
    return Operation(service, name, bucket)


def _is_express(bucket: str, patterns: Iterable[re.Pattern[str]]) -> bool:
    return bucket.endswith(EXPRESS_SUFFIX) or any(p.fullmatch(bucket) for p in patterns)


@dataclass
class ReadCount:
    """DynamoDB's own accounting of Query and Scan responses: items examined versus returned."""

    requests: int = 0
    scanned: int = 0
    returned: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "scanned": self.scanned, "returned": self.returned}


@dataclass
class ProxyStats:
    calls: dict[str, int] = field(default_factory=dict)
    delay_seconds: dict[str, float] = field(default_factory=dict)
    # "Query <table>[/<index>]" or "Scan <table>[/<index>]" -> counts
    reads: dict[str, ReadCount] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "calls": dict(self.calls),
            "delay_seconds": dict(self.delay_seconds),
            "reads": {k: v.as_dict() for k, v in self.reads.items()},
        }


class LatencyProxy:
    """The proxy; ``start_in_thread`` for tests and in-process use, ``serve_forever`` for a process."""

    def __init__(
        self,
        upstream: str,
        *,
        profile: str = "aws",
        seed: int = 14,
        express_buckets: Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.host = host
        self.port = port
        self.seed = seed
        self.express_buckets = [re.compile(p) for p in express_buckets]
        self.stats = ProxyStats()
        self._rngs: dict[str, random.Random] = {}
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.set_profile(profile)

    # --- latency -------------------------------------------------------------------------------

    def set_profile(self, name: str) -> None:
        if name not in PROFILES:
            raise ValueError(f"unknown latency profile {name!r}; known: {', '.join(PROFILES)}")
        self.profile_name = name
        self.profile = PROFILES[name]
        self._rngs.clear()  # each switch starts every operation's sequence from the seed again

    def latency_for(self, operation: Operation) -> float:
        """The drawn latency (seconds) of one request; 0 where the profile has none."""
        latency = self.profile.get(operation.key) or self.profile.get(f"{operation.service}:OTHER")
        if latency is None:
            return 0.0
        rng = self._rngs.get(operation.key)
        if rng is None:
            rng = self._rngs[operation.key] = random.Random(f"{self.seed}/{operation.key}")  # noqa: S311 - latency draws, not secrets
        return latency.draw(rng)

    # --- serving -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self.host, self.port, limit=CHUNK * 4)
        self.port = self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    def start_in_thread(self) -> LatencyProxy:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="latency-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise TimeoutError("latency proxy did not start")
        return self

    def stop(self) -> None:
        """Stop a proxy started with ``start_in_thread``: its connections are cancelled and closed."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        if self._loop is not None:
            self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                head = await _read_head(client_r)
                if head is None:
                    return
                request = _Head.parse(head)
                operation = classify(request.method, request.target, request.headers, self.express_buckets)
                if operation.service == "control" and operation.name != "moto-api":
                    await self._control(operation.name, request, client_r, client_w)
                    continue
                if upstream is not None and upstream[0].at_eof():
                    upstream[1].close()  # the stand-in closed it while idle: a new one
                    upstream = None
                if upstream is None:
                    upstream = await asyncio.open_connection(
                        self.upstream_host, self.upstream_port, limit=CHUNK * 4
                    )
                up_r, up_w = upstream
                if request.headers.get("expect", "").lower() == "100-continue":
                    client_w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await client_w.drain()
                up_w.write(request.rebuild(drop=("expect",)))
                keep = operation.service == "dynamodb" and operation.name in ("Query", "Scan")
                request_body = await _relay_body(client_r, up_w, request.headers, keep=keep)
                loop = asyncio.get_running_loop()
                received = loop.time()
                delay = self.latency_for(operation)
                response_head = await _read_head(up_r)
                if response_head is None:
                    raise ConnectionError("the stand-in closed the connection")
                response = _Head.parse(response_head)
                wait = received + delay - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._count_call(operation, delay)
                client_w.write(response_head)
                no_body = request.method == "HEAD" or response.status in (204, 304) or response.status < 200
                response_body = await _relay_body(
                    up_r, client_w, response.headers, keep=keep, no_body=no_body, until_close=True
                )
                if keep:
                    self._count_read(operation, request_body, response_body, response.headers)
                delimited = (
                    no_body
                    or "content-length" in response.headers
                    or ("chunked" in response.headers.get("transfer-encoding", "").lower())
                )
                if request.closes or response.closes or not delimited:
                    return
        except (ConnectionError, asyncio.IncompleteReadError) as error:
            LOG.debug("proxy connection ended: %s", error)
        finally:
            for writer in (client_w, upstream[1] if upstream else None):
                if writer is not None:
                    writer.close()

    def _count_call(self, operation: Operation, delay: float) -> None:
        self.stats.calls[operation.key] = self.stats.calls.get(operation.key, 0) + 1
        self.stats.delay_seconds[operation.key] = self.stats.delay_seconds.get(operation.key, 0.0) + delay

    def _count_read(
        self, operation: Operation, request_body: bytes, response_body: bytes, headers: Mapping[str, str]
    ) -> None:
        try:
            if headers.get("content-encoding", "") == "gzip":
                response_body = zlib.decompress(response_body, 16 + zlib.MAX_WBITS)
            request = json.loads(request_body or b"{}")
            response = json.loads(response_body or b"{}")
        except ValueError:
            return
        if "Count" not in response:
            return  # an error response
        where = request.get("TableName", "?") + (
            f"/{request['IndexName']}" if request.get("IndexName") else ""
        )
        key = f"{operation.name} {where}"
        count = self.stats.reads.setdefault(key, ReadCount())
        count.requests += 1
        count.scanned += int(response.get("ScannedCount", response["Count"]))
        count.returned += int(response["Count"])

    async def _control(
        self, name: str, request: _Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        body = await _relay_body(reader, None, request.headers, keep=True)
        status, payload = 200, {}
        if name == "stats":
            payload = {"profile": self.profile_name, **self.stats.as_dict()}
        elif name == "reset":
            payload = {"profile": self.profile_name, **self.stats.as_dict()}
            self.stats = ProxyStats()
        elif name == "profile" and request.method == "POST":
            try:
                self.set_profile(body.decode().strip())
                payload = {"profile": self.profile_name}
            except ValueError as error:
                status, payload = 400, {"error": str(error)}
        else:
            status, payload = 404, {"error": f"no control {name!r}"}
        data = json.dumps(payload).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()


# --- HTTP/1.1 framing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Head:
    first_line: str
    header_lines: tuple[tuple[str, str], ...]
    headers: dict[str, str]  # lower-case names

    @classmethod
    def parse(cls, head: bytes) -> _Head:
        lines = head.decode("latin-1").split("\r\n")
        pairs = []
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            pairs.append((name.strip(), value.strip()))
        return cls(lines[0], tuple(pairs), {n.lower(): v for n, v in pairs})

    @property
    def method(self) -> str:
        return self.first_line.split(" ", 1)[0]

    @property
    def target(self) -> str:
        parts = self.first_line.split(" ")
        return parts[1] if len(parts) > 1 else "/"

    @property
    def status(self) -> int:
        parts = self.first_line.split(" ")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0

    @property
    def closes(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        return connection == "close" or (self.first_line.endswith("HTTP/1.0") and connection != "keep-alive")

    def rebuild(self, drop: Iterable[str] = ()) -> bytes:
        dropped = {d.lower() for d in drop}
        lines = [self.first_line, *(f"{n}: {v}" for n, v in self.header_lines if n.lower() not in dropped)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if error.partial.strip():
            raise
        return None


async def _relay_body(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter | None,
    headers: Mapping[str, str],
    *,
    keep: bool,
    no_body: bool = False,
    until_close: bool = False,
) -> bytes:
    """Copy one message body as it arrives (Content-Length, chunked, or to the end of a response).

    Returns the (de-chunked) body when ``keep``, else b"". Pieces are written as they come, so a
    large object is never held whole.
    """
    kept = bytearray()

    async def forward(data: bytes) -> None:
        if writer is not None:
            writer.write(data)
            await writer.drain()

    if no_body:
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            await forward(size_line)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers up to the empty line
                    trailer = await reader.readuntil(b"\r\n")
                    await forward(trailer)
                    if trailer == b"\r\n":
                        return bytes(kept)
            remaining = size
            while remaining:
                piece = await reader.read(min(CHUNK, remaining))
                if not piece:
                    raise ConnectionError("body ended early")
                remaining -= len(piece)
                if keep:
                    kept += piece
                await forward(piece)
            await forward(await reader.readexactly(2))
    if "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining:
            piece = await reader.read(min(CHUNK, remaining))
            if not piece:
                raise ConnectionError("body ended early")
            remaining -= len(piece)
            if keep:
                kept += piece
            await forward(piece)
        return bytes(kept)
    if until_close:  # a response without length: the body runs to the end of the connection
        while piece := await reader.read(CHUNK):
            if keep:
                kept += piece
            await forward(piece)
    return bytes(kept)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m local.latency_proxy", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--upstream", required=True, help="the stand-in's endpoint, e.g. http://127.0.0.1:5000"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--profile", default="aws", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--express-bucket",
        action="append",
        default=[],
        help="a regular expression: buckets it matches get S3 Express One Zone latency "
        f"(names ending in {EXPRESS_SUFFIX} always do)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    proxy = LatencyProxy(
        args.upstream,
        profile=args.profile,
        seed=args.seed,
        express_buckets=args.express_bucket,
        host=args.host,
        port=args.port,
    )
    LOG.info("latency proxy on %s:%d -> %s, profile %s", args.host, args.port, args.upstream, args.profile)
    asyncio.run(proxy.serve_forever())


if __name__ == "__main__":
    main()
