"""``serve``'s check of its addresses before it starts anything (switch.io.ports): the line names what is in use."""
from __future__ import annotations

import socket

import msgspec
import pytest

from switch import config
from switch.io import ports


def _held() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_listener_of_the_file_is_named_by_its_key():
    with _held() as held:
        port = held.getsockname()[1]
        cfg = config.loads(f'[http]\nport = 0\n[[listeners]]\nhost = "127.0.0.1"\nport = {port}\n', "x.toml")
        with pytest.raises(ports.Unavailable) as e:
            ports.check(cfg)
    assert str(e.value) == f"x.toml: 127.0.0.1:{port} is already in use by another process - at `$.listeners[0].port`"


def test_the_default_listener_of_a_file_without_listeners_is_named_as_such():
    """No key of the file names it: the line says it is the default, on which port, and why it applies."""
    cfg = config.loads("[http]\nport = 0\n", "x.toml")
    assert cfg.left_out == ("listeners", "merchants") and cfg.listeners[0].port == 8583
    with _held() as held:
        port = held.getsockname()[1]  # the default's 0.0.0.0:8583, moved to a port held here
        cfg = msgspec.structs.replace(cfg, listeners=[config.Listener(host="127.0.0.1", port=port)])
        with pytest.raises(ports.Unavailable) as e:
            ports.check(cfg)
    assert str(e.value) == (f"x.toml: 127.0.0.1:{port} is already in use by another process - the default listener "
                            f"(port {port}): x.toml has no [[listeners]], so the default applies")
    assert "$." not in str(e.value)


def test_each_workers_http_port_is_tried_before_anything_starts():
    http = _free_port()
    cfg = config.loads(f'[http]\nport = {http}\n[[listeners]]\nhost = "127.0.0.1"\nport = 0\n', "x.toml")
    with socket.socket() as held:
        try:
            held.bind(("127.0.0.1", http + 2))  # worker 1's
        except OSError:
            pytest.skip(f"port {http + 2} is taken already")
        held.listen()
        ports.check(cfg)  # one process: worker ports are none of its business
        ports.check(cfg, 1)
        with pytest.raises(ports.Unavailable) as e:
            ports.check(cfg, 2)
    assert str(e.value) == (f"x.toml: 127.0.0.1:{http + 2} is already in use by another process "
                            "(worker 1's own HTTP port, http.port + 2) - at `$.http.port`")


def test_no_worker_http_ports_without_an_http_port():
    cfg = config.loads('[http]\nport = 0\n[[listeners]]\nhost = "127.0.0.1"\nport = 0\n', "x.toml")
    assert ports.places(cfg, 4) == []
