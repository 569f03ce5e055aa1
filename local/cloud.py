"""The local cloud: the whole archive on one machine, offline.

- moto in server mode (its own process) stands in for S3, DynamoDB and SQS, reached over HTTP
  exactly as AWS is;
- the resources are provisioned from the same definitions as the CDK stack;
- the DICOM listener runs as its own process (``python -m listeners.dicom``), as on Fargate;
- so does the HL7 MLLP listener (``python -m listeners.hl7``);
- queue pollers play Lambda's event source mappings and call the deployed handler modules.

Used by ``make run`` and by the integration tests alike.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from archive import topology as t
from archive.config import Settings
from archive.data.facilities import FacilityRepository
from archive.data.models import bind_models
from archive.data.registration import RegistrationConfigRepository
from archive.data.registry import Registry
from archive.data.secrets import SecretTlsMaterial
from archive.data.xds_access import XdsAccessConfig
from archive.model.organisations import AEInfo, FacilityInfo, OrganisationInfo
from archive.model.registration import (
    AffinityDomain,
    ArchiveIdentity,
    CodeSet,
    OrganisationRegistration,
    parse_code,
)
from archive.tls.rotation import RotatingTls

from .demo_idp import ensure_demo_idp
from .gateway import LocalGateway
from .pki import DemoPki
from .resources import QueueInfo, client, provision, put_tls_secret
from .runner import FUNCTIONS, SCHEDULED, QueuePoller, Scheduler

LOG = logging.getLogger("archive.local")
# How long a stop (Ctrl-C on ``make run``) may take, whatever is queued.
STOP_SECONDS = 5.0
# How long the stand-in may take to save its state at a stop (it saves every few seconds anyway).
MOTO_SAVE_SECONDS = 60.0
ROOT = Path(__file__).resolve().parent.parent

DEMO_ORG = OrganisationInfo(
    oid="1.2.246.10.12345678.10",
    name="Demo Hospital",
    trusted_issuers=("1.2.246.21", "1.2.246.10.12345678.22.2026"),
    # Images without Issuer of Patient ID get the hospital's own temporary-ID namespace.
    default_issuer="1.2.246.10.12345678.22.2026",
)
DEMO_AES = (
    AEInfo(
        "DEMO_MOD", DEMO_ORG.oid, "127.0.0.1", 11114, roles=("store", "commitment"), description="modality"
    ),
    AEInfo(
        "DEMO_PACS",
        DEMO_ORG.oid,
        "127.0.0.1",
        11113,
        roles=("store", "query", "retrieve", "commitment", "ian", "move-destination"),
        description="PACS",
    ),
)

# The demo hospital's patient administration system sends HL7 as facility XYZ_RADIOLOGY (the name
# the public test messages use); its namespace-only authority ADT1 stands for the temporary IDs.
DEMO_HL7_FACILITIES = (FacilityInfo("XYZ_RADIOLOGY", DEMO_ORG.oid, {"ADT1": "1.2.246.10.12345678.22.2026"}),)

# Registration (XDS-I.b) of the local archive. The OIDs are the demo namespace's; the codes are
# illustrative placeholders, to be replaced by the affinity domain's real code sets (admin CLI).
DEMO_ARCHIVE = ArchiveIdentity(
    oid="1.2.246.10.12345678.99",
    uid_root="1.2.246.10.12345678.99.1",
    repository_unique_id="1.2.246.10.12345678.99.2",
    retrieve_ae_title="ARCHIVE",
    home_community_id="urn:oid:1.2.246.10.12345678.99.3",
)
DEMO_DOMAIN = AffinityDomain(
    oid="1.2.246.21",
    name="Finnish personal identity codes (demo code sets)",
    codes=CodeSet(
        class_code=parse_code("IMG^1.2.246.10.12345678.99.10^Imaging study"),
        type_code=parse_code("IMGSTUDY^1.2.246.10.12345678.99.11^Imaging study manifest"),
        confidentiality_codes=(parse_code("N^2.16.840.1.113883.5.25^normal"),),
        healthcare_facility_type=parse_code("HOSP^1.2.246.10.12345678.99.12^Hospital"),
        practice_setting=parse_code("RAD^1.2.246.10.12345678.99.13^Radiology"),
        content_type=parse_code("IMG^1.2.246.10.12345678.99.14^Imaging"),
        language_code="fi-FI",
    ),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout: float = 30.0, process: subprocess.Popen[Any] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


@dataclass
class LocalCloud:
    moto_port: int = 0
    dicom_port: int = 11112
    start_dicom: bool = True
    hl7_port: int = 0  # 0: any free port (tests); ``make run`` uses 2575
    start_hl7: bool = True
    hl7_settings: dict[str, str] = field(default_factory=dict)
    xds_port: int = 0  # 0: any free port (tests); ``make run`` uses 8080
    start_xds: bool = True
    register_demo: bool = True
    # Seconds without new instances before a committed study is registered (the demo organisation's).
    registration_stability_seconds: float = 10.0
    retention_days: int = 1
    settings_overrides: dict[str, Any] = field(default_factory=dict)
    log_dir: Path | None = ROOT / ".local-cloud"
    # TLS beside the plain ports (0: any free port): a demo CA and certificates under tls_dir.
    tls_dir: Path | None = ROOT / ".local-cloud" / "tls"
    dicom_tls_port: int = 0
    hl7_tls_port: int = 0
    xds_tls_port: int = 0  # the XDS endpoints over HTTPS with client certificates (RAD-69's own TLS)
    # API Gateway stand-in: admin API (HTTP) and the customers' mutual-TLS endpoint (HTTPS).
    http_port: int = 0
    https_port: int = 0
    anchor_every_seconds: float = 3600.0
    # ``make bench``: put the delaying proxy (local.latency_proxy) between every process and the
    # stand-in, starting with this profile ("none" or "aws"); None: no proxy (tests, ``make run``).
    latency_profile: str | None = None
    latency_proxy_args: tuple[str, ...] = ()
    # Where the AWS stand-in keeps its data across a stop and a start (``make run``:
    # .local-cloud/aws); None keeps it in memory only, gone at stop (the tests' default).
    state_dir: Path | None = None

    endpoint: str = ""
    stand_in_endpoint: str = ""  # the stand-in itself, bypassing the proxy where there is one
    latency_proxy_port: int = 0
    settings: Settings | None = None
    queues: dict[str, QueueInfo] = field(default_factory=dict)
    pollers: list[QueuePoller] = field(default_factory=list)
    schedulers: list[Scheduler] = field(default_factory=list)
    pki: DemoPki | None = None
    gateway: LocalGateway | None = None
    function_processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _moto: subprocess.Popen[bytes] | None = None
    _latency_proxy: subprocess.Popen[bytes] | None = None
    dicom_process: subprocess.Popen[bytes] | None = None
    hl7_process: subprocess.Popen[bytes] | None = None
    xds_process: subprocess.Popen[bytes] | None = None
    _logs: list[IO[bytes]] = field(default_factory=list)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> LocalCloud:
        self.moto_port = self.moto_port or free_port()
        self.hl7_port = self.hl7_port or free_port()
        self.xds_port = self.xds_port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.moto_port}"
        moto_argv = [sys.executable, "-m", "local.moto_server", "-H", "127.0.0.1", "-p", str(self.moto_port)]
        if self.state_dir is not None:
            moto_argv += ["--data-dir", str(self.state_dir)]
        self._moto = self._spawn("moto", moto_argv)
        # Loading a kept state takes longer than starting empty.
        self._wait_http(f"{self.endpoint}/moto-api/", 120.0 if self.state_dir else 30.0, self._moto)
        self.stand_in_endpoint = self.endpoint
        if self.latency_profile is not None:
            self.start_latency_proxy()
        # Handler modules and the pynamodb models read credentials and settings from the environment.
        os.environ.update(self.base_env())
        if self.tls_dir is not None:
            self.pki = DemoPki.create(self.tls_dir, DEMO_ORG.oid)
            self.dicom_tls_port = self.dicom_tls_port or free_port()
            self.hl7_tls_port = self.hl7_tls_port or free_port()
            self.xds_tls_port = self.xds_tls_port or free_port()
            self.https_port = self.https_port or free_port()
        self.http_port = self.http_port or free_port()
        self.settings, self.queues = provision(
            self.endpoint,
            retention_days=self.retention_days,
            tls_secret_value=self.pki.secret_value() if self.pki else None,
            **self.settings_overrides,
        )
        os.environ.update(self.settings.as_env())
        if self.register_demo:
            self.register(DEMO_ORG, *DEMO_AES)
            for facility in DEMO_HL7_FACILITIES:
                FacilityRepository().add(facility, replace=True)
            self.configure_registration(DEMO_ORG.oid, stability_seconds=self.registration_stability_seconds)
            XdsAccessConfig().set_identity_provider(ensure_demo_idp())
        self.start_pollers()
        self.start_gateway()
        if self.start_dicom:
            self.start_dicom_listener()
        if self.start_hl7:
            self.start_hl7_listener()
        if self.start_xds:
            self.start_xds_gateway()
        return self

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Stop everything within about ``timeout`` seconds, whatever is queued.

        Pollers finish the batch in hand if they can in that time, else are abandoned; listeners
        and function processes get SIGTERM together (each answers or finishes what it is handling)
        and SIGKILL at the deadline. What is still queued stays queued: nothing is acknowledged that
        is not durably queued, and the handlers are idempotent, so a later start (with a store that
        keeps its data) resumes it.
        """
        deadline = time.monotonic() + timeout
        LOG.info("stopping the local cloud")
        for poller in self.pollers:
            poller.request_stop()
        for scheduler in self.schedulers:
            scheduler.request_stop()
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        candidates = [
            self.dicom_process,
            self.hl7_process,
            self.xds_process,
            *self.function_processes.values(),
        ]
        processes = [p for p in candidates if p is not None and p.poll() is None]
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for poller in self.pollers:
            if not poller.join(deadline - time.monotonic()):
                LOG.warning("%s still busy at stop; its batch stays queued", poller.function.name)
        self.pollers.clear()
        for scheduler in self.schedulers:
            if not scheduler.join(deadline - time.monotonic()):
                LOG.warning("scheduled %s still running at stop", scheduler.function.name)
        self.schedulers.clear()
        LOG.info("pollers stopped after %.1f s", timeout - (deadline - time.monotonic()))
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.dicom_process = self.hl7_process = self.xds_process = None
        self.function_processes.clear()
        LOG.info(
            "listeners and function processes stopped after %.1f s", timeout - (deadline - time.monotonic())
        )
        if self._moto is not None:
            self._moto.terminate()
            try:
                # A persistent stand-in saves what changed since its last save (seconds at most);
                # one in memory has nothing to keep, and a stop must not wait for it.
                self._moto.wait(MOTO_SAVE_SECONDS if self.state_dir is not None else 1)
            except subprocess.TimeoutExpired:
                self._moto.kill()
                self._moto.wait(10)
            self._moto = None
        if self._latency_proxy is not None:
            self._latency_proxy.kill()
            self._latency_proxy.wait(10)
            self._latency_proxy = None
        LOG.info("local cloud stopped after %.1f s", timeout - (deadline - time.monotonic()))
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- pieces ----------------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": "eu-north-1",
            "AWS_REGION": "eu-north-1",
            # moto has no S3 Express CreateSession: sign staging-tier requests as for any bucket.
            "AWS_S3_DISABLE_EXPRESS_SESSION_AUTH": "true",
            "POWERTOOLS_SERVICE_NAME": "archive-local",
            "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "core" / "python"), str(ROOT)]),
        }

    def env(self) -> dict[str, str]:
        """The environment of a listener process (what the Fargate task definition sets)."""
        assert self.settings is not None
        return {**os.environ, **self.base_env(), **self.settings.as_env()}

    def start_latency_proxy(self) -> None:
        """The delaying proxy in front of the stand-in; every process then reaches AWS through it."""
        self.latency_proxy_port = self.latency_proxy_port or free_port()
        argv = [sys.executable, "-m", "local.latency_proxy", "--upstream", self.stand_in_endpoint]
        argv += ["--port", str(self.latency_proxy_port), "--profile", str(self.latency_profile)]
        self._latency_proxy = self._spawn("latency-proxy", [*argv, *self.latency_proxy_args])
        wait_for_port("127.0.0.1", self.latency_proxy_port, process=self._latency_proxy)
        self.endpoint = f"http://127.0.0.1:{self.latency_proxy_port}"

    def start_pollers(self) -> None:
        sqs = client("sqs", self.endpoint)
        for function in FUNCTIONS:
            queue = self.queues[function.queue]
            if function.own_process:
                running = self.function_processes.get(function.name)
                # Pollers stopped and started again (the bench pauses indexing) keep a function
                # process that still runs, instead of starting a second one beside it.
                if running is None or running.poll() is not None:
                    self.start_function_process(function.name)
                continue
            for _ in range(function.concurrency):
                poller = QueuePoller(function, sqs, queue.url, queue.arn)
                poller.start()
                self.pollers.append(poller)

    def start_gateway(self) -> None:
        """API Gateway's part (the admin API and the mutual-TLS customer API) and the schedules."""
        assert self.settings is not None
        tls = None
        if self.settings.tls_secret_id:
            tls = RotatingTls(SecretTlsMaterial(self.settings, self.settings.tls_secret_id), check_seconds=5)
        self.gateway = LocalGateway(
            http_port=self.http_port,
            https_port=self.https_port if tls else None,
            tls_context=tls.server if tls else None,
        ).start()
        for function in SCHEDULED:
            scheduler = Scheduler(function, self.anchor_every_seconds)
            scheduler.start()
            self.schedulers.append(scheduler)

    def rotate_tls(self, secret_value: str) -> None:
        """A new version of the TLS secret, as an operator's rotation would put it."""
        put_tls_secret(self.endpoint, secret_value)

    def start_function_process(self, name: str, **env: str) -> subprocess.Popen[bytes]:
        """Run one function's poller as its own process (see ``local.lambda_process``); ``env``
        overrides its environment (a test may point it at a bucket that is not there)."""
        function = next(f for f in FUNCTIONS if f.name == name)
        queue = self.queues[function.queue]
        process = self._spawn(
            name,
            [sys.executable, "-m", "local.lambda_process", name, queue.url, queue.arn],
            env={**self.env(), **env},
        )
        self.function_processes[name] = process
        return process

    def stop_function_process(self, name: str, *, kill: bool = False) -> None:
        process = self.function_processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def configure_registration(
        self,
        org_oid: str,
        *,
        stability_seconds: float,
        register_uncommitted: bool = False,
        timezone: str = "Europe/Helsinki",
    ) -> None:
        """The local archive's identity and code sets, and an organisation's registration settings."""
        assert self.settings is not None
        bind_models(self.settings)
        config = RegistrationConfigRepository()
        config.set_archive(DEMO_ARCHIVE)
        config.set_domain(DEMO_DOMAIN)
        config.set_organisation(
            OrganisationRegistration(
                org_oid=org_oid,
                affinity_domain=DEMO_DOMAIN.oid,
                timezone=timezone,
                stability_seconds=stability_seconds,
                register_uncommitted=register_uncommitted,
            )
        )

    def start_dicom_listener(self) -> subprocess.Popen[bytes]:
        env = {**self.env(), t.ENV_DICOM_HOST: "127.0.0.1", t.ENV_DICOM_PORT: str(self.dicom_port)}
        if self.pki is not None:
            env[t.ENV_DICOM_TLS_PORT] = str(self.dicom_tls_port)
        self.dicom_process = self._spawn("dicom", [sys.executable, "-m", "listeners.dicom"], env=env)
        wait_for_port("127.0.0.1", self.dicom_port, process=self.dicom_process)
        if self.pki is not None:
            wait_for_port("127.0.0.1", self.dicom_tls_port, process=self.dicom_process)
        return self.dicom_process

    def stop_dicom_listener(self, *, kill: bool = False) -> None:
        process = self.dicom_process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            process.wait(15)
        self.dicom_process = None

    def start_hl7_listener(self) -> subprocess.Popen[bytes]:
        env = {
            **self.env(),
            t.ENV_HL7_HOST: "127.0.0.1",
            t.ENV_HL7_PORT: str(self.hl7_port),
            t.PATIENT_UPDATE_QUEUE.url_env: self.queues[t.PATIENT_UPDATE_QUEUE.name].url,
            **({t.ENV_HL7_TLS_PORT: str(self.hl7_tls_port)} if self.pki is not None else {}),
            **self.hl7_settings,
        }
        self.hl7_process = self._spawn("hl7", [sys.executable, "-m", "listeners.hl7"], env=env)
        wait_for_port("127.0.0.1", self.hl7_port, process=self.hl7_process)
        if self.pki is not None:
            wait_for_port("127.0.0.1", self.hl7_tls_port, process=self.hl7_process)
        return self.hl7_process

    def stop_hl7_listener(self) -> None:
        process = self.hl7_process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(15)
        self.hl7_process = None

    def start_xds_gateway(self) -> subprocess.Popen[bytes]:
        """API Gateway's and the load balancer's stand-in for the XDS endpoints (``local.gateway``)."""
        env = {**self.env(), t.ENV_XDS_HOST: "127.0.0.1", t.ENV_XDS_PORT: str(self.xds_port)}
        if self.pki is not None:
            env[t.ENV_XDS_TLS_PORT] = str(self.xds_tls_port)
        self.xds_process = self._spawn("xds", [sys.executable, "-m", "local.gateway"], env=env)
        wait_for_port("127.0.0.1", self.xds_port, process=self.xds_process)
        if self.pki is not None:
            wait_for_port("127.0.0.1", self.xds_tls_port, process=self.xds_process)
        return self.xds_process

    def stop_xds_gateway(self) -> None:
        process = self.xds_process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(15)
        self.xds_process = None

    @property
    def xds_url(self) -> str:
        return f"http://127.0.0.1:{self.xds_port}"

    @property
    def xds_tls_url(self) -> str:
        return f"https://127.0.0.1:{self.xds_tls_port}"

    def register(self, org: OrganisationInfo, *aes: AEInfo) -> None:
        registry = Registry()
        registry.add_organisation(org, replace=True)
        for ae in aes:
            registry.add_ae(ae, replace=True)

    def run_scheduled(self, function: str, event: dict[str, object] | None = None) -> dict[str, object]:
        """Invoke a scheduled function once (EventBridge Scheduler's job on AWS) and return its result."""
        result = subprocess.run(
            [sys.executable, "-m", "local.scheduled", function, json.dumps(event or {})],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=600,
            check=True,
        )
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until every queue the pollers read is empty (all S3 events handled)."""
        sqs = client("sqs", self.endpoint)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = 0
            for function in (f for f in FUNCTIONS if f.drained):
                attrs = sqs.get_queue_attributes(
                    QueueUrl=self.queues[function.queue].url,
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                )["Attributes"]
                pending += int(attrs["ApproximateNumberOfMessages"]) + int(
                    attrs["ApproximateNumberOfMessagesNotVisible"]
                )
            if pending == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("queues did not drain")

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        stdout: Any = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
            self._logs.append(log)
            stdout = log
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env or {**os.environ, **self.base_env()},
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout else None,
            # Own process group: Ctrl-C reaches only the runner, which stops the children itself
            # (pollers first, while moto still answers), instead of all of them at once.
            start_new_session=True,
        )

    @staticmethod
    def _wait_http(url: str, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{url}: the server exited with {process.returncode} (see its log)")
            try:
                with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback moto endpoint
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"{url} did not answer")
