"""Bring up the whole pipeline on this machine: moto's server, the receiver, the consumers (and the dashboard).

Every service runs as its own process with the contract's command, configured only
through environment variables; queues (and with ``s3_bucket`` the bucket) are provisioned
as the setup scripts do. Leaving :class:`EmbeddedStack` stops every process it started.
How it is used: docs/architecture.md, "Components".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from src.common.settings import QueueSettings
from src.embedded.processes import child_pids, cmdline, free_port, port_is_free, process_cpu_seconds, tail
from src.ops.bucket import provision_bucket
from src.ops.queues import Queues, provision_queues

WORKER_READY = "Application startup complete."
"""What uvicorn logs (at info) once a worker's lifespan startup finished and it accepts requests."""
CONSUMER_READY = "] consuming "
"""What a consumer logs (at info) right before its long polls start."""


@dataclass
class StackConfig:
    """What differs between the demo, a load test and a test; ports 0 mean "pick free ones"."""

    data_dir: Path
    log_dir: Path
    api_key: str
    moto_port: int = 0
    receiver_port: int = 0
    queue_name: str = "telemetry-queue-dev"
    consumers: int = 1
    receiver_workers: int = 1
    """uvicorn worker processes (``--workers``); 1 serves from uvicorn's own process."""
    visibility_timeout_s: int | None = None
    """The queue's VisibilityTimeout and the consumers' VISIBILITY_TIMEOUT_S, if not the default 30 s."""
    s3_bucket: str | None = None
    """Turns the S3 tier on (the bucket is created at start)."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra settings for every service (BATCH_SIZE, LOG_LEVEL, ...)."""
    own_process_groups: bool = False
    """Start each service in a process group of its own, so a terminal's Ctrl-C reaches only the
    program owning the stack, which then stops the services in order (``make dashboard``, ``make demo``)."""


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    log_start: int = 0
    """Size of the log before this process wrote to it (logs are appended across runs)."""

    def log_text(self) -> str:
        """What this process has logged so far."""
        with self.log_path.open("rb") as handle:
            handle.seek(self.log_start)
            return handle.read().decode(errors="replace")


class EmbeddedStack:
    """A context manager owning every process it starts; leaving it stops them all."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.moto_port = config.moto_port or free_port()
        self.receiver_port = config.receiver_port or free_port()
        self.services: list[Service] = []
        self.queues: Queues | None = None
        self.metrics_ports: dict[str, int] = {}
        """Each consumer's METRICS_PORT, by service name."""
        self.scratch_dirs: list[Path] = []
        """Directories the services needed (the receiver workers' metrics), removed by :meth:`stop`."""
        self.dashboard_port: int | None = None
        """The dashboard's port once :meth:`start_dashboard` started it."""

    @property
    def aws_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.receiver_port}"

    def env(self) -> dict[str, str]:
        """The environment every service of this stack runs with (real variables win over .env)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SQS_"))}
        env.update(
            {
                "API_KEY": self.config.api_key,
                "AWS_ENDPOINT_URL": self.aws_endpoint,
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "SQS_QUEUE_NAME": self.config.queue_name,
                "DATA_DIR": str(self.config.data_dir),
                "RECEIVER_URL": self.receiver_url,
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.config.visibility_timeout_s is not None:
            env["VISIBILITY_TIMEOUT_S"] = str(self.config.visibility_timeout_s)
        if self.config.s3_bucket is not None:
            env["S3_BUCKET"] = self.config.s3_bucket
        env.update(self.config.env)
        return env

    def __enter__(self) -> EmbeddedStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        for port in (self.moto_port, self.receiver_port):
            if not port_is_free(port):
                raise RuntimeError(f"port {port} is in use: stop what listens there, or choose another port")
        self.start_aws()
        self.queues = provision_queues(self.settings())
        if self.config.s3_bucket is not None:
            provision_bucket(self.settings())
        self.start_receiver()
        for index in range(self.config.consumers):
            self.start_consumer(index)

    def start_aws(self) -> Service:
        service = self._spawn(
            "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.moto_port)]
        )
        self._wait_http(f"{self.aws_endpoint}/moto-api/", "moto")
        return service

    def start_receiver(self) -> Service:
        """uvicorn with the contract's app; with several workers, wait until every one has started up."""
        workers = self.config.receiver_workers
        command = [sys.executable, "-m", "uvicorn", "src.receiver.app:app", "--host", "127.0.0.1"]
        command += ["--port", str(self.receiver_port), "--no-access-log"]
        # With workers, uvicorn's info lines name each worker's pid and say when its startup completed.
        command += ["--log-level", "warning"] if workers == 1 else ["--workers", str(workers), "--log-level", "info"]
        extra = {}
        if workers > 1:  # /metrics sums every worker's values (src/receiver/metrics.py): a fresh, empty directory
            self.scratch_dirs.append(Path(tempfile.mkdtemp(prefix="receiver-metrics-")))
            extra["PROMETHEUS_MULTIPROC_DIR"] = str(self.scratch_dirs[-1])  # prometheus_client's own variable
        service = self._spawn("receiver", command, extra)
        self._wait_http(f"{self.receiver_url}/health", "receiver")
        if workers > 1:
            self._wait_until(
                lambda: service.log_text().count(WORKER_READY) >= workers and len(self.receiver_workers()) >= workers,
                f"{workers} receiver workers",
                service,
            )
        return service

    @property
    def dashboard_url(self) -> str:
        if self.dashboard_port is None:
            raise RuntimeError("the dashboard is not started: call start_dashboard() first")
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start_dashboard(self, port: int = 0, env: dict[str, str] | None = None) -> Service:
        """The dashboard (the contract's uvicorn command) on 127.0.0.1:``port`` (0: a free one), pointed at
        this stack's receiver, consumers, queue and DATA_DIR, once it answers HTTP (``/pipeline`` 200, or
        401 when DASHBOARD_TOKEN is set). Start it after the consumers: :meth:`stop` then stops it first."""
        port = port or free_port()
        if not port_is_free(port):
            raise RuntimeError(f"port {port} is in use: stop what listens there, or choose another port")
        self.dashboard_port = port
        settings = {
            "RECEIVER_URL": self.receiver_url,
            "CONSUMER_METRICS_URLS": ",".join(f"http://127.0.0.1:{p}/metrics" for p in self.metrics_ports.values()),
        }
        command = [sys.executable, "-m", "uvicorn", "src.dashboard.app:app", "--host", "127.0.0.1"]
        command += ["--port", str(port), "--no-access-log"]
        service = self._spawn("dashboard", command, settings | (env or {}))
        self._wait_until(
            lambda: _http_status(f"{self.dashboard_url}/pipeline") in (200, 401), "the dashboard to answer", service
        )
        return service

    def receiver_workers(self) -> list[int]:
        """Pids of the processes serving HTTP: uvicorn's workers, or uvicorn itself without ``--workers``."""
        receiver = self.service("receiver").process.pid
        if self.config.receiver_workers == 1:
            return [receiver]
        return [pid for pid in child_pids(receiver) if b"spawn_main" in cmdline(pid)]

    def start_consumer(self, index: int = 0) -> Service:
        """A consumer process, once it polls the queue: load sent right after finds it ready
        rather than queueing up behind its startup (unless LOG_LEVEL hides the ready line)."""
        name = f"consumer-{index}"
        self.metrics_ports[name] = port = self.metrics_ports.get(name) or free_port()
        service = self._spawn(name, [sys.executable, "-m", "src.consumer.batch_consumer"], {"METRICS_PORT": str(port)})
        if self.env().get("LOG_LEVEL", "INFO").upper() in ("DEBUG", "INFO"):
            self._wait_until(lambda: CONSUMER_READY in service.log_text(), f"{name} to poll", service)
        return service

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each running service, its live children included (uvicorn's
        workers), has used so far; empty where /proc is missing."""
        used: dict[str, float] = {}
        for service in self.services:
            own = process_cpu_seconds(service.process.pid)
            if own is None:
                continue
            children = (process_cpu_seconds(pid) for pid in child_pids(service.process.pid))
            used[service.name] = own + sum(c for c in children if c is not None)
        return used

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def stop(self) -> None:
        """SIGTERM in reverse start order (consumers drain first), SIGKILL after a grace period."""
        for service in reversed(self.services):
            _stop_process(service)
        self.services.clear()
        for directory in self.scratch_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self.scratch_dirs.clear()

    def terminate(self, name: str, grace_s: float = 20.0) -> int:
        """Stop the service ``name`` as an operator would (SIGTERM, SIGKILL after ``grace_s``)
        and forget it; its exit status. ``restart(name)`` starts it again."""
        service = self.service(name)
        self.services.remove(service)
        return _stop_process(service, grace_s)

    def crash(self, name: str) -> None:
        """``kill -9`` the service ``name`` (with any worker processes) and forget it, as a
        crash would leave things: nothing drained, nothing flushed. ``restart(name)`` starts it again."""
        service = self.service(name)
        self.services.remove(service)
        for pid in child_pids(service.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        service.process.kill()
        service.process.wait()
        service.log_file.close()

    def restart(self, name: str) -> Service:
        """Start the service ``name`` again (``moto``, ``receiver`` or ``consumer-N``), stopping it first if it runs."""
        if any(service.name == name for service in self.services):
            self.terminate(name)
        if name == "moto":
            return self.start_aws()
        if name == "receiver":
            return self.start_receiver()
        if name == "dashboard":
            return self.start_dashboard(self.dashboard_port or 0)
        if name.startswith("consumer-") and name.removeprefix("consumer-").isdigit():
            return self.start_consumer(int(name.removeprefix("consumer-")))
        raise ValueError(f"no service called {name!r}: moto, receiver, consumer-N or dashboard")

    def settings(self) -> QueueSettings:
        """Settings that reach this stack's AWS and queue, for scripts and tests acting on it."""
        settings = QueueSettings(
            aws_endpoint_url=self.aws_endpoint,
            aws_default_region="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            sqs_queue_name=self.config.queue_name,
            data_dir=self.config.data_dir,
            s3_bucket=self.config.s3_bucket,
        )
        if self.config.visibility_timeout_s is None:
            return settings
        return settings.model_copy(update={"visibility_timeout_s": self.config.visibility_timeout_s})

    def _spawn(self, name: str, command: list[str], extra_env: dict[str, str] | None = None) -> Service:
        log_path = self.config.log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        log_start = log_file.tell()
        process = subprocess.Popen(
            command,
            env=self.env() | (extra_env or {}),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            process_group=0 if self.config.own_process_groups else None,
        )
        service = Service(name, process, log_path, log_file, log_start)
        self.services.append(service)
        return service

    def _wait_http(self, url: str, name: str, timeout_s: float = 60.0) -> None:
        """Wait until ``url`` answers 200, failing early with the log if the process died."""

        self._wait_until(lambda: _http_status(url) == 200, f"{name} to answer at {url}", self.service(name), timeout_s)

    @staticmethod
    def _wait_until(check: Callable[[], bool], what: str, service: Service, timeout_s: float = 60.0) -> None:
        """Poll ``check`` until true, failing early with the log if ``service``'s process died."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise RuntimeError(
                    f"{service.name} exited with {service.process.returncode}:\n{tail(service.log_path)}"
                )
            if check():
                return
            time.sleep(0.1)
        raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}:\n{tail(service.log_path)}")


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``with EmbeddedStack(...)`` stops its processes on the way out.

    Python's default SIGTERM action ends the process at once, which would orphan every
    service the stack started.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _http_status(url: str) -> int | None:
    """The HTTP status ``url`` answers with (errors included); None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _stop_process(service: Service, grace_s: float = 20.0) -> int:
    """SIGTERM, then SIGKILL after ``grace_s``; the exit status."""
    if service.process.poll() is None:
        service.process.send_signal(signal.SIGTERM)
        try:
            service.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()
    service.log_file.close()
    return service.process.returncode
