"""The benchmark's delaying proxy: classification, seeded draws, delay, streaming, DynamoDB counts."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from local.latency_proxy import AWS_PROFILE, LatencyProxy, Operation, classify


class _Upstream(BaseHTTPRequestHandler):
    """A stand-in for the stand-in: keeps PUT bodies, serves them back, answers DynamoDB."""

    protocol_version = "HTTP/1.1"
    objects: dict[str, bytes] = {}
    release = threading.Event()

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            data = bytearray()
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return bytes(data)
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_PUT(self) -> None:
        self.objects[self.path] = self._body()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        if self.path == "/bucket/slow":
            # First half, then wait until the client has seen it: a proxy that buffers whole
            # bodies would never let the client see the first half.
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nfirst\r\n")
            self.wfile.flush()
            self.release.wait(10)
            self.wfile.write(b"6\r\nsecond\r\n0\r\n\r\n")
            return
        data = self.objects[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        request = json.loads(self._body())
        body = json.dumps({"Count": 2, "ScannedCount": 5 if request.get("FilterExpression") else 2}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def upstream() -> Iterator[str]:
    _Upstream.objects = {}
    _Upstream.release = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _Upstream.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture()
def proxy(upstream: str) -> Iterator[LatencyProxy]:
    running = LatencyProxy(upstream, profile="aws", seed=3).start_in_thread()
    yield running
    running.stop()


def test_classifies_s3_dynamodb_and_sqs_calls() -> None:
    express = [__import__("re").compile(r"archive-fast-.*")]
    assert classify("PUT", "/archive-images/instances/1.dcm", {}) == Operation("s3", "PUT", "archive-images")
    assert classify("PUT", "/b/k", {"x-amz-copy-source": "/a/k"}).name == "COPY"
    assert classify("GET", "/b/k?versionId=3", {}).name == "GET"
    assert classify("HEAD", "/b/k", {}).name == "HEAD"
    assert classify("GET", "/b?list-type=2&prefix=x", {}).name == "LIST"
    assert classify("PUT", "/images--eun1-az1--x-s3/k", {}).service == "s3express"
    assert classify("GET", "/archive-fast-1/k", {}, express).service == "s3express"
    assert classify("GET", "/archive-slow/k", {}, express).service == "s3"
    assert classify("POST", "/", {"x-amz-target": "DynamoDB_20120810.TransactWriteItems"}) == Operation(
        "dynamodb", "TransactWriteItems"
    )
    assert classify("POST", "/", {"x-amz-target": "AmazonSQS.SendMessage"}) == Operation("sqs", "SendMessage")
    assert classify("POST", "/", {"x-amz-target": "secretsmanager.GetSecretValue"}).service == "other"
    assert classify("GET", "/__latency__/stats", {}) == Operation("control", "stats")
    # Every operation the brief names has its own distribution in the AWS profile.
    for key in ("s3:PUT", "s3:GET", "s3:HEAD", "s3:COPY", "s3:LIST", "s3express:PUT", "dynamodb:GetItem"):
        assert key in AWS_PROFILE
    for key in (
        "dynamodb:Query",
        "dynamodb:TransactWriteItems",
        "dynamodb:BatchWriteItem",
        "sqs:ReceiveMessage",
    ):
        assert key in AWS_PROFILE


def test_draws_are_seeded_and_follow_the_published_order_of_magnitude() -> None:
    def draws(seed: int) -> list[float]:
        proxy = LatencyProxy("http://127.0.0.1:1", seed=seed)
        return [proxy.latency_for(Operation("s3", "PUT")) for _ in range(2000)]

    first, again, other = draws(1), draws(1), draws(2)
    assert first == again
    assert first != other
    ordered = sorted(first)
    # S3 Standard: tens of milliseconds; S3 Express and DynamoDB: single-digit milliseconds.
    assert 0.02 < ordered[1000] < 0.05
    proxy = LatencyProxy("http://127.0.0.1:1", seed=1)
    express = sorted(proxy.latency_for(Operation("s3express", "GET")) for _ in range(2000))
    dynamodb = sorted(proxy.latency_for(Operation("dynamodb", "GetItem")) for _ in range(2000))
    assert express[1000] < 0.01
    assert dynamodb[1000] < 0.01
    assert LatencyProxy("http://127.0.0.1:1", profile="none").latency_for(Operation("s3", "PUT")) == 0.0


def test_a_request_takes_at_least_its_drawn_delay_and_bodies_pass_unchanged(
    proxy: LatencyProxy, upstream: str
) -> None:
    twin = LatencyProxy(upstream, profile="aws", seed=3)  # same seed: the same draws, in order
    body = os.urandom(3 * 1024 * 1024 + 17)
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    start = time.monotonic()
    connection.request("PUT", "/bucket/object", body=body, headers={"Expect": "100-continue"})
    response = connection.getresponse()
    response.read()
    put_seconds = time.monotonic() - start
    assert response.status == 200
    assert put_seconds >= twin.latency_for(Operation("s3", "PUT"))

    start = time.monotonic()
    connection.request("GET", "/bucket/object")
    response = connection.getresponse()
    received = response.read()
    get_seconds = time.monotonic() - start
    assert hashlib.sha256(received).digest() == hashlib.sha256(body).digest()
    assert _Upstream.objects["/bucket/object"] == body
    assert get_seconds >= twin.latency_for(Operation("s3", "GET"))

    # Chunked request bodies too (botocore streams file objects this way).
    connection.request("PUT", "/bucket/chunked", body=iter([b"abc", b"defgh"]), encode_chunked=True)
    connection.getresponse().read()
    assert _Upstream.objects["/bucket/chunked"] == b"abcdefgh"
    assert proxy.stats.calls == {"s3:PUT": 2, "s3:GET": 1}
    connection.close()


def test_a_response_body_streams_through_before_it_has_ended(proxy: LatencyProxy) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    connection.request("GET", "/bucket/slow")
    response = connection.getresponse()
    assert response.read(5) == b"first"  # the upstream holds the rest until this has arrived
    _Upstream.release.set()
    assert response.read() == b"second"
    connection.close()


def test_counts_what_dynamodb_examined_and_returned_per_table_and_index(proxy: LatencyProxy) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    for request in (
        {"TableName": "studies", "IndexName": "by_patient"},
        {"TableName": "studies", "IndexName": "by_patient"},
        {"TableName": "instances", "FilterExpression": "attribute_not_exists(#r)"},
    ):
        connection.request(
            "POST",
            "/",
            body=json.dumps(request),
            headers={"X-Amz-Target": "DynamoDB_20120810.Query", "Content-Type": "application/x-amz-json-1.0"},
        )
        connection.getresponse().read()
    connection.request("POST", "/__latency__/reset")
    stats = json.loads(connection.getresponse().read())
    assert stats["reads"] == {
        "Query studies/by_patient": {"requests": 2, "scanned": 4, "returned": 4},
        "Query instances": {"requests": 1, "scanned": 5, "returned": 2},
    }
    connection.request("POST", "/__latency__/profile", body=b"none")
    assert json.loads(connection.getresponse().read()) == {"profile": "none"}
    connection.request("GET", "/__latency__/stats")
    assert json.loads(connection.getresponse().read())["reads"] == {}
    connection.close()
