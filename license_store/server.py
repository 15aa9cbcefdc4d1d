"""Serve the license API from several worker processes, each with its own listening socket.

``uvicorn --workers N`` shares one listening socket among its workers, and whichever worker is
awake when connections arrive accepts all that are waiting. A burst of keep-alive connections
(an intake platform's connection pool starting, a load generator) can so land almost entirely on
one worker while the others idle: measured with ``bench/lookup.py``, 39 of 42 connections on one
of two workers, half the machine unused. Here each worker binds its own socket to the port with
``SO_REUSEPORT`` and the kernel spreads new connections over the workers by a hash of their
addresses.

:func:`serve` is the supervisor: it starts the workers, starts a new one in place of one that
dies, and on SIGTERM or SIGINT stops them all (each finishes the requests in flight, uvicorn's
graceful shutdown). SIGHUP restarts the workers one at a time, each new worker listening before
an old one stops, so the port keeps answering through a release or a configuration change.
Linux only (``SO_REUSEPORT`` load balancing).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from typing import Any

__all__ = ["ServerSpec", "serve"]

log = logging.getLogger("govexchange.server")

APP = "license_store.api:create_app"
STARTUP_TIMEOUT_S = 120.0  # a worker's lifespan opens the store, pools and deployment
STOP_TIMEOUT_S = 30.0  # requests in flight get this long to finish


@dataclass(frozen=True)
class ServerSpec:
    """What every worker serves, and where."""

    host: str = "127.0.0.1"
    port: int = 8000
    app: str = APP
    factory: bool = True
    log_level: str = "info"
    access_log: bool = True
    log_config: dict[str, Any] | None = field(default=None, hash=False, compare=False)


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host``:``port`` in the port's ``SO_REUSEPORT`` group."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _worker(spec: ServerSpec, ready: Event) -> None:
    """A worker process: its own socket, one uvicorn server; ``ready`` once it serves."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                ready.set()

    sock = listening_socket(spec.host, spec.port)
    config = uvicorn.Config(
        spec.app,
        factory=spec.factory,
        log_level=spec.log_level,
        access_log=spec.access_log,
        log_config=spec.log_config,
    )
    Server(config).run(sockets=[sock])


class _Supervisor:
    def __init__(self, spec: ServerSpec, workers: int) -> None:
        self.spec = spec
        self.count = workers
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[multiprocessing.process.BaseProcess] = []
        self.stopping = threading.Event()
        self.restarting = threading.Event()

    def spawn(self) -> tuple[multiprocessing.process.BaseProcess, Event]:
        """A new worker process, and the event it sets once it serves."""
        ready = self.context.Event()
        process = self.context.Process(
            target=_worker, args=(self.spec, ready), name="govx-api-worker"
        )
        process.start()
        return process, ready

    def wait_ready(self, process: multiprocessing.process.BaseProcess, ready: Event) -> None:
        """Return once ``process`` serves; stop it and raise if it exits or takes too long."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not ready.wait(0.2):
            if not process.is_alive() or time.monotonic() > deadline or self.stopping.is_set():
                self.stop_worker(process)
                raise RuntimeError(
                    f"an API worker did not start (exit code {process.exitcode}); "
                    "its log above says why"
                )
        log.info("API worker %d serving on %s:%d", process.pid, self.spec.host, self.spec.port)

    def start_worker(self) -> multiprocessing.process.BaseProcess:
        """A new worker, once it serves."""
        process, ready = self.spawn()
        self.wait_ready(process, ready)
        return process

    @staticmethod
    def stop_worker(process: multiprocessing.process.BaseProcess) -> None:
        if process.is_alive():
            process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
            process.join(STOP_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join()

    def run(self) -> int:
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        try:
            started = [self.spawn() for _ in range(self.count)]  # in parallel
            self.workers = [process for process, _ in started]
            for process, ready in started:
                self.wait_ready(process, ready)
            while not self.stopping.wait(0.5):
                if self.restarting.is_set():
                    self.restarting.clear()
                    self._rolling_restart()
                self._replace_dead()
            return 0
        finally:
            for process in self.workers:
                self.stop_worker(process)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            self.restarting.set()
        else:
            self.stopping.set()

    def _replace_dead(self) -> None:
        for index, process in enumerate(self.workers):
            if not process.is_alive() and not self.stopping.is_set():
                code = process.exitcode
                log.error("API worker %d exited (code %s); starting another", process.pid, code)
                self.workers[index] = self.start_worker()

    def _rolling_restart(self) -> None:
        log.info("restarting the API workers one at a time")
        for index, old in enumerate(list(self.workers)):
            if self.stopping.is_set():
                return
            self.workers[index] = self.start_worker()  # listening before the old one stops
            self.stop_worker(old)


def serve(spec: ServerSpec, workers: int = 1) -> int:
    """Serve ``spec`` with ``workers`` processes until SIGTERM/SIGINT; returns the exit code.

    One worker is plain ``uvicorn.run``; more get a socket each (``SO_REUSEPORT``) under a
    supervisor that replaces dead workers and restarts them all, one at a time, on SIGHUP.
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if workers == 1:
        import uvicorn

        uvicorn.run(
            spec.app,
            factory=spec.factory,
            host=spec.host,
            port=spec.port,
            log_level=spec.log_level,
            access_log=spec.access_log,
            log_config=spec.log_config,
        )
        return 0
    if spec.port == 0:
        raise ValueError("several workers need a fixed port (each binds it on its own)")
    probe = listening_socket(spec.host, spec.port)  # fail here, not in every worker, if taken
    probe.close()
    log.info("serving with %d workers (pid %d; SIGHUP restarts them)", workers, os.getpid())
    return _Supervisor(spec, workers).run()
