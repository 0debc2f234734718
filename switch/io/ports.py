"""Before ``serve`` starts anything: can every address it will listen on be bound now?

``serve`` opens the terminal listeners and the HTTP port last, once the
journal is open and the acquirers have signed on (terminals must not connect
to a switch that cannot yet pay).  A port held by another process, a host
name that does not resolve or an address that is not this machine's was
found only then: after the simulators had started, the journal had been
opened and the acquirers had been signed on and off again, with an error
naming neither the configuration key nor the file.  :func:`check` binds
each address once (and lets it go) before any of that, and names both.

The journal's lock is tried there too (:func:`journal_free`): another switch
running on the same journal.

Not a configuration problem (``check-config`` does not look: the port may be
free on the host the file is deployed to), so ``serve`` says "cannot start"
and exits 1.
"""
from __future__ import annotations

import errno
import os
import socket

from switch import config as config_mod
from switch.io.workers import worker_http_port


class Unavailable(OSError):
    """An address ``serve`` would listen on cannot be bound now."""


def places(cfg: config_mod.Config, workers: int = 1) -> list[tuple[str | None, str, int, str]]:
    """(key path, host, port, what it is) of every address ``serve`` listens on, port 0 (any
    free one) left out.  The key path is None for the default listener of a file without
    listeners: no key of the file names it.  With ``workers`` > 1, each worker's own admin
    HTTP port (``http.port`` + 1 + i) is tried with the rest, named by ``http``."""
    if "listeners" in cfg.left_out:
        found = [(None, lst.host, lst.port, f"the default listener (port {lst.port}): {cfg.source} has no "
                  "[[listeners]], so the default applies") for lst in cfg.listeners]
    else:
        found = [(f"listeners[{i}]", lst.host, lst.port, "") for i, lst in enumerate(cfg.listeners)]
    found.append(("http", cfg.http.host, cfg.http.port, ""))
    if workers > 1 and cfg.http.port:
        found += [("http", cfg.http.host, worker_http_port(cfg, i),
                   f"worker {i}'s own HTTP port, http.port + {1 + i}") for i in range(workers)]
    return [p for p in found if p[2]]


def check(cfg: config_mod.Config, workers: int = 1) -> None:
    """Raise :class:`Unavailable` for the first address that cannot be bound, naming
    the file and the key path (or what the address is when no key names it); bind
    nothing for longer than the check."""
    for where, host, port, what in places(cfg, workers):
        problem = _problem(host, port)
        if problem is None:
            continue
        key, msg = problem
        if where is None:
            raise Unavailable(f"{cfg.source}: {msg} - {what}")
        raise Unavailable(f"{cfg.source}: {msg}{f' ({what})' if what else ''} - at `$.{where}.{key}`")


def journal_free(cfg: config_mod.Config) -> None:
    """Raise :class:`Unavailable` if another payswitch process holds the journal's lock
    (``files.claim``), naming the file and ``$.journal.url``: found before the simulators
    start rather than after.  Takes the lock only for the check."""
    from switch.journal import files

    url = cfg.journal.url
    path = url[len("sqlite://"):] if url.lower().startswith("sqlite://") else None
    if path is None or not files.on_disk(path) or not os.path.exists(path):
        return  # a new journal: nobody holds it
    try:
        files.release(files.claim(path))
    except files.InUse as e:
        raise Unavailable(f"{cfg.source}: {e} - at `$.journal.url`") from None


def _problem(host: str, port: int) -> tuple[str, str] | None:
    """None when ``host``:``port`` can be bound as the servers bind it (SO_REUSEADDR,
    every address the host resolves to), else (the key at fault, what is wrong)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return "host", f"cannot resolve host {host!r}: {e.strerror}"
    bound, elsewhere = False, None
    for family, kind, proto, address in sorted({(i[0], i[1], i[2], i[4]) for i in infos}):
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind(address)
            except OSError as e:
                shown = f"[{address[0]}]:{port}" if family == socket.AF_INET6 else f"{address[0]}:{port}"
                if e.errno == errno.EADDRNOTAVAIL:  # the event loop skips such an address (a family not enabled)
                    elsewhere = elsewhere or address[0]
                    continue
                if e.errno == errno.EADDRINUSE:
                    return "port", f"{shown} is already in use by another process"
                if e.errno == errno.EACCES:
                    return "port", f"port {port} needs privileges to bind (below 1024)"
                return "port", f"cannot bind {shown}: {e.strerror}"
            bound = True
    if not bound and elsewhere is not None:
        named = repr(host) if host == elsewhere else f"{host!r} ({elsewhere})"
        return "host", f"{named} is not an address of this machine"
    return None
