"""Bring up the whole pipeline on this machine: moto's server, the receiver, the consumer.

Used by ``make demo`` (fixed ports, as an operator would run it), by ``load_test.py
--embedded`` and by the integration tests (free loopback ports, a temporary DATA_DIR).
Every service runs as its own process with the contract's command, configured only
through environment variables, exactly as a user would start it in four terminals.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from src.common.provisioning import Queues, provision_queues  # noqa: E402
from src.common.settings import CommonSettings  # noqa: E402


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


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
    env: dict[str, str] = field(default_factory=dict)
    """Extra settings for every service (BATCH_SIZE, LOG_LEVEL, ...)."""


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


class EmbeddedStack:
    """A context manager owning every process it starts; leaving it stops them all."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.moto_port = config.moto_port or free_port()
        self.receiver_port = config.receiver_port or free_port()
        self.services: list[Service] = []
        self.queues: Queues | None = None

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
        self.queues = provision_queues(self._settings())
        self.start_receiver()
        for index in range(self.config.consumers):
            self.start_consumer(index)

    def start_aws(self) -> None:
        self._spawn("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.moto_port)])
        self._wait_http(f"{self.aws_endpoint}/moto-api/", "moto")

    def start_receiver(self) -> None:
        command = [sys.executable, "-m", "uvicorn", "src.receiver.app:app", "--host", "127.0.0.1"]
        command += ["--port", str(self.receiver_port), "--log-level", "warning", "--no-access-log"]
        self._spawn("receiver", command)
        self._wait_http(f"{self.receiver_url}/health", "receiver")

    def start_consumer(self, index: int = 0) -> Service:
        return self._spawn(f"consumer-{index}", [sys.executable, "-m", "src.consumer.batch_consumer"])

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each running service has used so far; empty where /proc is missing."""
        used: dict[str, float] = {}
        for service in self.services:
            try:
                fields = Path(f"/proc/{service.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[service.name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return used

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def stop(self) -> None:
        """SIGTERM in reverse start order (consumers drain first), SIGKILL after a grace period."""
        for service in reversed(self.services):
            self.stop_service(service)
        self.services.clear()

    def stop_service(self, service: Service, grace_s: float = 20.0) -> int:
        if service.process.poll() is None:
            service.process.send_signal(signal.SIGTERM)
            try:
                service.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()
        service.log_file.close()
        return service.process.returncode

    def _settings(self) -> CommonSettings:
        return CommonSettings(
            aws_endpoint_url=self.aws_endpoint,
            aws_default_region="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            sqs_queue_name=self.config.queue_name,
            data_dir=self.config.data_dir,
        )

    def _spawn(self, name: str, command: list[str]) -> Service:
        log_path = self.config.log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=self.env(), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        service = Service(name, process, log_path, log_file)
        self.services.append(service)
        return service

    def _wait_http(self, url: str, name: str, timeout_s: float = 60.0) -> None:
        """Wait until ``url`` answers 200, failing early with the log if the process died."""
        service = self.service(name)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise RuntimeError(f"{name} exited with {service.process.returncode}:\n{tail(service.log_path)}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not become ready at {url} in {timeout_s:.0f} s:\n{tail(service.log_path)}")


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``with EmbeddedStack(...)`` stops its processes on the way out.

    Python's default SIGTERM action ends the process at once, which would orphan every
    service the stack started.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
