"""Starts both archives side by side in the benchmark's network namespace and tears them down."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archive.model.organisations import AEInfo
from archive.topology import LOCK_INSTANCE

from local.cloud import DEMO_ORG, LocalCloud, free_port
from local.resources import client

from .commitment import CommitmentRequester
from .measure import ProcessMeter
from .orthanc import Orthanc
from .peers import Target

LOG = logging.getLogger("bench.env")
MODALITY_AE = "BENCH_MOD"  # sends images and asks for storage commitment
RECEIVER_AE = "BENCH_RECV"  # queries and retrieves; C-MOVE destination
# The benchmark's modes: our archive on the local stand-in as it is, and with AWS-shaped latency
# added to every S3, DynamoDB and SQS call (local.latency_proxy). Orthanc runs once beside both.
MODES = {"local": ("ours", "none"), "aws": ("ours-aws", "aws")}
# Buckets that get S3 Express One Zone latency besides names ending in --x-s3: comma-separated
# regular expressions (a low-latency tier whose local bucket is named otherwise).
EXPRESS_BUCKETS_ENV = "ARCHIVE_BENCH_EXPRESS_BUCKETS"
# The listener's commitment wait in the benchmark; an instance received (staged) before it gets as
# long again for its locked copy, so the report comes within twice this. The requester waits a
# little longer than that, then records "no report" (event type 0) and the run goes on.
COMMITMENT_WAIT = 240.0
COMMITMENT_REPORT_TIMEOUT = 2 * COMMITMENT_WAIT + 60.0


class SqsCallTimer:
    """Wraps the local runner's SQS clients and adds up the time spent in each call to moto."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def wrap(self, inner: Any) -> Any:
        return _TimedClient(inner, self)


class _TimedClient:
    def __init__(self, inner: Any, timer: SqsCallTimer) -> None:
        self._inner = inner
        self._timer = timer

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute
        timer = self._timer

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                return attribute(*args, **kwargs)
            finally:
                timer.seconds[name] = timer.seconds.get(name, 0.0) + time.monotonic() - start
                timer.calls[name] = timer.calls.get(name, 0) + 1

        return timed


# Up to this many queued messages are received and deleted rather than purged (no one-a-minute window).
DRAIN_AT_MOST = 5000


def _drain(sqs: Any, url: str) -> None:
    """Receive and delete until a receive comes back empty (visible messages only)."""
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
        )


@dataclass
class BenchEnvironment(AbstractContextManager["BenchEnvironment"]):
    work_dir: Path
    cloud: LocalCloud | None = None
    orthanc: Orthanc | None = None
    requester: CommitmentRequester | None = None
    receiver_port: int = 0
    ours: Target | None = None
    theirs: Target | None = None
    modes: tuple[str, ...] = ("local", "aws")
    ours_by_mode: dict[str, Target] = field(default_factory=dict)
    _last_purge: float = -1000.0
    _notifications: dict[str, Any] | None = None

    def __enter__(self) -> BenchEnvironment:
        if self.work_dir.exists():
            shutil.rmtree(self.work_dir)
        self.work_dir.mkdir(parents=True)
        self.requester = CommitmentRequester(MODALITY_AE, free_port(), COMMITMENT_REPORT_TIMEOUT)
        self.receiver_port = free_port()
        self.cloud = LocalCloud(
            dicom_port=free_port(),
            log_dir=self.work_dir / "cloud-logs",
            # Indexing 500 instances through moto takes a while; a commitment must not time out
            # into failures while it is merely slow. The report says how long it took.
            # Bounded all the same (COMMITMENT_WAIT below): a commitment that stalls is reported
            # as failed, and the run goes on.
            settings_overrides={
                "commitment_wait_seconds": COMMITMENT_WAIT,
                "spool_dir": str(self.work_dir),
            },
            # Every call of every process goes through the delaying proxy; "none" until a target
            # of the AWS mode is measured (see use()).
            latency_profile="none",
            latency_proxy_args=tuple(
                arg
                for pattern in os.environ.get(EXPRESS_BUCKETS_ENV, "").split(",")
                if pattern.strip()
                for arg in ("--express-bucket", pattern.strip())
            ),
        )
        self.cloud.start()
        self.cloud.register(
            DEMO_ORG,
            AEInfo(
                MODALITY_AE, DEMO_ORG.oid, "127.0.0.1", self.requester.port, roles=("store", "commitment")
            ),
            AEInfo(
                RECEIVER_AE,
                DEMO_ORG.oid,
                "127.0.0.1",
                self.receiver_port,
                roles=("store", "query", "retrieve", "move-destination"),
            ),
        )
        assert self.cloud.dicom_process is not None and self.cloud._moto is not None
        self.ours = Target(
            "ours",
            "127.0.0.1",
            self.cloud.dicom_port,
            "ARCHIVE",
            self.cloud.dicom_process.pid,
            helper_pids={
                "moto": self.cloud._moto.pid,
                **({"proxy": self.cloud._latency_proxy.pid} if self.cloud._latency_proxy else {}),
            },
            latency_profile="none",
        )
        for mode in self.modes:
            name, profile = MODES[mode]
            self.ours_by_mode[mode] = Target(
                name,
                self.ours.host,
                self.ours.port,
                self.ours.ae_title,
                self.ours.pid,
                helper_pids=dict(self.ours.helper_pids),
                latency_profile=profile,
            )
        self.orthanc = Orthanc(
            self.work_dir / "orthanc",
            dicom_port=free_port(),
            http_port=free_port(),
            modalities={
                MODALITY_AE: ("127.0.0.1", self.requester.port),
                RECEIVER_AE: ("127.0.0.1", self.receiver_port),
            },
        ).start()
        self.theirs = Target("orthanc", "127.0.0.1", self.orthanc.dicom_port, "ORTHANC", self.orthanc.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.requester is not None:
            self.requester.stop()
        if self.orthanc is not None:
            self.orthanc.stop()
        if self.cloud is not None:
            moto = self.cloud._moto
            try:
                self.cloud.stop()
            except subprocess.TimeoutExpired:
                # moto holding gigabytes of objects can take longer than LocalCloud waits to exit.
                LOG.warning("moto did not stop in time; killing it")
                if moto is not None:
                    moto.kill()
                    moto.wait(30)
                self.cloud._moto = None
                self.cloud.stop()

    def targets(self) -> list[Target]:
        """Ours in every mode of the run, then Orthanc."""
        assert self.theirs is not None
        return [*self.ours_by_mode.values(), self.theirs]

    # --- the latency proxy -----------------------------------------------------------------

    def use(self, target: Target) -> Target:
        """Switch the proxy to ``target``'s latency profile (ours only) before measuring it."""
        if target.latency_profile:
            self._proxy("profile", target.latency_profile.encode())
        return target

    def proxy_stats(self, *, reset: bool = False) -> dict[str, Any]:
        """Calls, drawn delays and DynamoDB's ScannedCount/Count per table since the last reset."""
        return self._proxy("reset" if reset else "stats", b"" if reset else None)

    def _proxy(self, control: str, body: bytes | None) -> dict[str, Any]:
        assert self.cloud is not None
        request = urllib.request.Request(f"{self.cloud.endpoint}/__latency__/{control}", data=body)
        with urllib.request.urlopen(request, timeout=30) as response:
            return dict(json.loads(response.read()))

    def detach_index_events(self) -> None:
        """Throughput runs: the bucket sends no ObjectCreated events while storescu sends.

        The index runner is paused during them and their events were discarded anyway; without
        the notification moto neither spends a SendMessage per PUT nor grows a backlog that slows
        every later call (real S3 sends its events asynchronously, outside the PUT's latency), and
        no PurgeQueue (one a minute) is needed between runs.
        """
        assert self.cloud is not None and self.cloud.settings is not None
        if self._notifications is not None:
            return
        s3 = client("s3", self.cloud.stand_in_endpoint)
        current = s3.get_bucket_notification_configuration(Bucket=self.cloud.settings.bucket)
        current.pop("ResponseMetadata", None)
        self._notifications = current
        s3.put_bucket_notification_configuration(
            Bucket=self.cloud.settings.bucket, NotificationConfiguration={}
        )

    def attach_index_events(self) -> None:
        assert self.cloud is not None and self.cloud.settings is not None
        if self._notifications is None:
            return
        s3 = client("s3", self.cloud.stand_in_endpoint)
        s3.put_bucket_notification_configuration(
            Bucket=self.cloud.settings.bucket, NotificationConfiguration=self._notifications
        )
        self._notifications = None

    # --- the local Lambda runner (index function) ------------------------------------------

    def pause_indexing(self) -> None:
        """Stop the local event source mapping: on AWS the index Lambda runs on its own capacity,
        here it would share the two cores with the listener while throughput is measured."""
        assert self.cloud is not None
        for poller in self.cloud.pollers:
            poller.stop()
        self.cloud.pollers.clear()
        # The copier into the locked bucket too (docs/storage.md, "Two tiers"): a Lambda on AWS.
        self.cloud.stop_function_process(LOCK_INSTANCE.function)

    def resume_indexing(self) -> None:
        assert self.cloud is not None
        if not self.cloud.pollers:
            self.cloud.start_pollers()
        elif LOCK_INSTANCE.function not in self.cloud.function_processes:
            self.cloud.start_function_process(LOCK_INSTANCE.function)

    def empty_index_queue(self, *, tolerate: int = 0) -> None:
        """Drop the S3 events of throughput runs (those instances are never queried).

        The queue must be empty before our next send: moto's SQS gets slower with every queued
        message (SendMessage, which S3 notifications use on every PUT, and ReceiveMessage alike), so a
        backlog would slow the next run's C-STOREs for reasons that do not exist on AWS. moto, like
        SQS, allows one PurgeQueue a minute, so this may wait for the window. A backlog of up to
        ``tolerate`` messages is left alone (a few large images barely slow moto down).
        """
        assert self.cloud is not None
        sqs = client("sqs", self.cloud.endpoint)
        # The copies of staged instances too: on AWS the copier drains them on its own capacity.
        urls = [self.cloud.queues[name].url for name in ("index", LOCK_INSTANCE.queue)]
        attributes = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        queued = 0
        for url in urls:
            counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=attributes)["Attributes"]
            queued += sum(int(counts[a]) for a in attributes)
        if queued <= tolerate:
            return
        wait = self._last_purge + 61.0 - time.monotonic()
        if wait > 0 and queued <= DRAIN_AT_MOST:
            # Within the PurgeQueue window: deleting a few thousand messages is quicker than waiting.
            for url in urls:
                _drain(sqs, url)
            return
        if wait > 0:
            LOG.info("waiting %.0fs for the PurgeQueue window", wait)
            time.sleep(wait)
        for url in urls:
            sqs.purge_queue(QueueUrl=url)
        self._last_purge = time.monotonic()

    def drop_throughput_backlog(self) -> dict[str, int]:
        """After the throughput runs, before everything runs again: drop their copies in flight.

        With the copier paused, every instance of the throughput runs (8 x 500 CT images in a
        full run, several GB of 20 MiB ones) is left staged with a message on the lock queue.
        Resumed, the copier would work through that whole backlog (a GET, a PUT into the locked
        bucket, a HEAD, then an S3 event and an index transaction each) before it reached the
        commitment study's instances, which are queued behind it: on the stand-in that took longer
        than the commitment's wait, the stall of the 2026-11-30 run. Those instances are never
        queried or committed, so their messages are purged and their staged copies deleted
        (nothing else is staged then: every earlier commitment study was copied and its staged
        copies released by the indexer). Returns what was dropped, for the log and the report.
        """
        assert self.cloud is not None and self.cloud.settings is not None
        sqs = client("sqs", self.cloud.stand_in_endpoint)
        dropped: dict[str, int] = {}
        attributes = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        for name in ("index", LOCK_INSTANCE.queue):
            url = self.cloud.queues[name].url
            counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=attributes)["Attributes"]
            dropped[f"{name} queue messages"] = sum(int(counts[a]) for a in attributes)
        self.empty_index_queue()
        staging = self.cloud.settings.staging_bucket
        if staging:
            s3 = client("s3", self.cloud.stand_in_endpoint)
            deleted = 0
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=staging):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    s3.delete_objects(Bucket=staging, Delete={"Objects": keys, "Quiet": True})
                    deleted += len(keys)
            dropped["staged copies"] = deleted
        LOG.info("dropped the throughput runs' backlog: %s", dropped)
        return dropped

    def timed_index_receives(self) -> SqsCallTimer:
        """Time every index poller's SQS calls to moto (ReceiveMessage, DeleteMessageBatch)."""
        assert self.cloud is not None
        timer = SqsCallTimer()
        for poller in self.cloud.pollers:
            if poller.function.queue == "index":
                poller.sqs = timer.wrap(poller.sqs)
        return timer

    def lambda_thread_ids(self) -> list[int]:
        assert self.cloud is not None
        return [t for p in self.cloud.pollers if (t := p._thread.native_id) is not None]

    def helper_meters(self, target: Target) -> dict[str, ProcessMeter]:
        """For our archive: moto (stand-in for AWS) and the Lambda handler threads of the runner."""
        if not target.latency_profile:
            return {}

        meters = {
            "moto": ProcessMeter(target.helper_pids["moto"]),
            "lambda": ProcessMeter(os.getpid(), thread_ids=self.lambda_thread_ids()),
        }
        if "proxy" in target.helper_pids:
            meters["proxy"] = ProcessMeter(target.helper_pids["proxy"])
        return meters

    def versions(self) -> dict[str, str]:
        import importlib.metadata as md

        out = {"python": sys.version.split()[0]}
        for package in ("pynetdicom", "pydicom", "moto", "boto3", "pynamodb"):
            out[package] = md.version(package)
        assert self.orthanc is not None
        out["orthanc"] = self.orthanc.version()
        return out
