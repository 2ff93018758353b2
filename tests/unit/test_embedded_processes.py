"""What the embedded stack knows of processes and ports: live ones found, gone ones answered, never raised."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from src.embedded.processes import child_pids, cmdline, free_port, port_is_free, process_cpu_seconds, tail


def test_a_port_someone_listens_on_is_not_free() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_is_free(sock.getsockname()[1])
    assert port_is_free(free_port())


def test_a_port_whose_server_just_stopped_is_free_despite_its_connections_in_time_wait() -> None:
    """`make dashboard` run again right after Ctrl-C: the stopped servers' closed connections linger in
    TIME_WAIT for a minute, which a server binding with SO_REUSEADDR (uvicorn, moto) ignores."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end of the connection goes to TIME_WAIT
    client.recv(1)
    client.close()
    server.close()
    assert port_is_free(port)


def test_a_child_is_found_with_its_command_line_and_cpu_time() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert child.pid in child_pids(os.getpid())
        assert b"sys.stdin.read()" in cmdline(child.pid)
        cpu = process_cpu_seconds(child.pid)
        assert cpu is not None and cpu >= 0
    finally:
        child.communicate(b"")
    assert child.pid not in child_pids(os.getpid())


def test_a_process_that_is_gone_has_no_cpu_time_and_no_command_line() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid is free
    assert process_cpu_seconds(child.pid) is None
    assert cmdline(child.pid) == b""


def test_tail_gives_the_last_lines_or_says_there_is_no_log(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    assert tail(log, lines=2) == "line 48\nline 49"
    assert tail(tmp_path / "missing.log") == "(no log)"
