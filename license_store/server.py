"""Serve the license API from several worker processes, each with its own listening socket.

``uvicorn --workers N`` shares one listening socket among its workers, and whichever worker is
awake when connections arrive accepts all that are waiting. A burst of keep-alive connections
(an intake platform's connection pool starting, a load generator) can so land almost entirely on
one worker while the others idle: measured with ``bench/lookup.py``, 39 of 42 connections on one
of two workers, half the machine unused. Here each worker listens on its own socket bound to the
port with ``SO_REUSEPORT`` and the kernel spreads new connections over the workers by a hash of
their addresses.

:func:`serve` is the supervisor. It binds one socket per worker slot and keeps it open for as
long as it serves; a worker listens on its slot's socket only once its application has started,
so no connection waits on a worker that cannot answer yet. It starts a new worker in place of
one that dies (on a fresh socket: the connections queued on the dead worker's socket are lost
with it), and on SIGTERM or SIGINT stops them all (each finishes the requests in flight,
uvicorn's graceful shutdown). SIGHUP restarts the workers one at a time: the new worker serves
on the slot's socket next to the old one before the old one stops, and the socket itself never
closes, so no new connection is refused or reset through a release or a configuration change.
If a new worker does not start, the restart stops there and the running workers keep serving.

A stopping worker answers the requests it has accepted and drains its keep-alive connections
rather than closing them idle: for up to :data:`DRAIN_S` it answers the next request on each
with ``Connection: close``, so the client opens its next connection to a serving worker.
Closing an idle keep-alive connection outright races a client that is sending on it at that
moment, and that request fails (measured: 2 of 7,934 reads over four restarts, with six readers
that do not retry).

Linux only (``SO_REUSEPORT`` load balancing).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from typing import Any

__all__ = ["ServerSpec", "WorkerStartError", "serve"]

log = logging.getLogger("govexchange.server")

APP = "license_store.api:create_app"
STARTUP_TIMEOUT_S = 120.0  # a worker's lifespan opens the store, pools and deployment
STOP_TIMEOUT_S = 30.0  # requests in flight get this long to finish
# A stopping worker waits this long for the next request on each open connection, to answer it
# with ``Connection: close`` (uvicorn's graceful shutdown would close an idle connection at once,
# under a request the client may be sending). Connections still idle after it are closed.
DRAIN_S = 2.0
POLL_S = 0.25  # how often the supervisor looks at its signal flags


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


class WorkerStartError(RuntimeError):
    """A worker process exited, or took too long, before it served."""


class _Stopping(Exception):
    """SIGTERM or SIGINT arrived while the supervisor waited for a worker to start."""


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_port_free(host: str, port: int) -> None:
    """Raise ``OSError`` naming the address if anything listens on it.

    The probe does not set ``SO_REUSEPORT``, so it also fails on a port another ``govx serve``
    (or any process of this user with ``SO_REUSEPORT``) listens on, which the workers' sockets
    would silently join and share the connections with.
    """
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
            probe.listen(1)
        except OSError as error:
            raise OSError(
                error.errno, f"cannot listen on {_address(host, port)}: {error.strerror}"
            ) from None


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` in the port's ``SO_REUSEPORT`` group.

    It does not listen yet: the kernel hands it connections only once the worker that serves it
    calls ``listen`` (uvicorn does, after the application started).
    """
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(
            error.errno, f"cannot listen on {_address(host, port)}: {error.strerror}"
        ) from None
    return sock


def _close_after_answer(connection: Any) -> None:
    """Make the request in progress on ``connection`` (if any) the last one it answers: its
    response says ``Connection: close`` (if not sent yet) and the connection closes after it."""
    cycle = getattr(connection, "cycle", None)
    if cycle is not None and not cycle.response_complete:
        cycle.keep_alive = False


def _draining_protocol() -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, closing each connection after its next answer once the server
    drains (``server_state.draining``, set by the worker's shutdown)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class DrainingProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def data_received(self, data: bytes) -> None:
            super().data_received(data)  # a complete request head starts its response cycle
            if getattr(self.server_state, "draining", False):
                _close_after_answer(self)

    return DrainingProtocol


def _worker(spec: ServerSpec, sock: socket.socket, ready: Event) -> None:
    """A worker process: one uvicorn server on its slot's socket; ``ready`` once it serves."""
    # The supervisor restarts (SIGHUP) and stops (SIGTERM) the workers. A SIGHUP to the whole
    # process group (a closed terminal) would kill a worker outright, requests in flight and
    # all; a Ctrl-C during its startup would end it with a traceback (once it serves, uvicorn
    # handles SIGINT as a graceful stop).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import uvicorn

    from exchange.logs import configure_logging

    # A spawned process starts without logging: the API's own records go through the masked
    # handler, as the supervisor's do. Its per-lookup lines are an access log of their own:
    # without the access log (a bench), only warnings.
    configure_logging(spec.log_level.upper() if spec.access_log else "WARNING")

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)  # the lifespan, then listen on ``sockets``
            if self.started:
                ready.set()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for server in self.servers:
                server.close()  # accept no more; the slot's socket stays open in the supervisor
            # Drain: every answer from now on closes its connection (DrainingProtocol), so a
            # client's next request goes to a serving worker. uvicorn's own shutdown then
            # closes what stayed idle all along.
            self.server_state.draining = True  # type: ignore[attr-defined]
            for connection in list(self.server_state.connections):
                _close_after_answer(connection)
            deadline = time.monotonic() + DRAIN_S
            while self.server_state.connections and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await super().shutdown(sockets)

    config = uvicorn.Config(
        spec.app,
        http=_draining_protocol(),
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
        self.slots: list[socket.socket] = []
        self.workers: list[BaseProcess] = []
        # Plain flags: a signal handler must not take a lock (threading.Event.set does) that
        # the main thread it interrupts may hold.
        self.stopping = False
        self.restart_requested = False

    def spawn(self, sock: socket.socket) -> tuple[BaseProcess, Event]:
        """A new worker process serving ``sock``, and the event it sets once it serves."""
        ready = self.context.Event()
        process = self.context.Process(
            target=_worker, args=(self.spec, sock, ready), name="govx-api-worker"
        )
        process.start()
        return process, ready

    def wait_ready(self, process: BaseProcess, ready: Event) -> None:
        """Return once ``process`` serves; stop it and raise if it exits, takes too long, or
        the supervisor is told to stop."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not ready.wait(0.2):
            if self.stopping:
                self.stop_workers([process])
                raise _Stopping
            if not process.is_alive() or time.monotonic() > deadline:
                self.stop_workers([process])
                raise WorkerStartError(
                    f"an API worker did not start (exit code {process.exitcode}); "
                    "its log above says why"
                )
        log.info(
            "API worker %d serving on %s", process.pid, _address(self.spec.host, self.spec.port)
        )

    def start_worker(self, sock: socket.socket) -> BaseProcess:
        """A new worker on ``sock``, once it serves."""
        process, ready = self.spawn(sock)
        self.wait_ready(process, ready)
        return process

    @staticmethod
    def stop_workers(processes: list[BaseProcess]) -> None:
        """Stop ``processes`` together: SIGTERM (uvicorn finishes the requests in flight), then
        SIGKILL what still runs after :data:`STOP_TIMEOUT_S`."""
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()

    def run(self) -> int:
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        try:
            self.slots = [bound_socket(self.spec.host, self.spec.port) for _ in range(self.count)]
            started = [self.spawn(sock) for sock in self.slots]  # in parallel
            self.workers = [process for process, _ in started]
            for process, ready in started:
                self.wait_ready(process, ready)
            while not self.stopping:
                if self.restart_requested:
                    self.restart_requested = False
                    self._rolling_restart()
                self._replace_dead()
                wait([process.sentinel for process in self.workers], POLL_S)  # wakes on a death
        except _Stopping:
            pass
        finally:
            self.stop_workers(self.workers)
            for sock in self.slots:
                sock.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 0

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            self.restart_requested = True
        else:
            self.stopping = True

    def _replace_dead(self) -> None:
        for index, process in enumerate(self.workers):
            if process.is_alive() or self.stopping:
                continue
            log.error(
                "API worker %d exited (code %s); starting another", process.pid, process.exitcode
            )
            # Connections queued on the dead worker's socket would wait for the new worker's
            # startup: close it (they are reset) so that new connections go to the others.
            self.slots[index].close()
            self.slots[index] = bound_socket(self.spec.host, self.spec.port)
            self.workers[index] = self.start_worker(self.slots[index])

    def _rolling_restart(self) -> None:
        log.info("restarting the API workers one at a time")
        for index, old in enumerate(list(self.workers)):
            if self.stopping:
                return
            try:
                # serves on the slot's socket next to the old worker before that one stops
                new = self.start_worker(self.slots[index])
            except WorkerStartError as error:
                log.error("%s; restart abandoned, the running workers keep serving", error)
                return
            self.workers[index] = new
            self.stop_workers([old])


def serve(spec: ServerSpec, workers: int = 1) -> int:
    """Serve ``spec`` with ``workers`` processes until SIGTERM/SIGINT; returns the exit code.

    One worker is plain ``uvicorn.run``; more get a socket each (``SO_REUSEPORT``) under a
    supervisor that replaces dead workers and restarts them all, one at a time, on SIGHUP.
    Raises ``OSError`` if the address is taken, :class:`WorkerStartError` if a worker does not
    start.
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
    _check_port_free(spec.host, spec.port)
    log.info("serving with %d workers (pid %d; SIGHUP restarts them)", workers, os.getpid())
    return _Supervisor(spec, workers).run()
