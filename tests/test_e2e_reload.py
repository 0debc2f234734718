"""A reload answers what it applied and, by key path, what needs a restart."""
import json

import pytest

from tests import e2e

pytestmark = pytest.mark.e2e


def post(port, path):
    status, body = e2e.http_post(port, path)
    return status, json.loads(body)


def test_reload_names_what_it_applied_and_what_needs_a_restart(tmp_path):
    ports = {"term": e2e.free_port(), "http": e2e.free_port()}
    text = e2e.base_config(tmp_path, ports)
    proc = e2e.SwitchProcess(tmp_path, text, ports).start()
    try:
        moved = e2e.free_port()
        changed = text.replace('terminals = ["DEMO0001-DEMO0999"]', 'terminals = ["DEMO0001-DEMO0999", "NEWT0001"]')
        changed = changed.replace(f"port = {ports['term']}", f"port = {moved}")
        proc.config.write_text(changed)
        status, body = post(ports["http"], "/admin/reload")
        assert status == 200 and body["reloaded"] is True
        assert body["message"] == (
            f"reloaded {proc.config}; applied: merchants[0].terminals; not applied, needs a restart: listeners[0].port"
        )
        # the terminal is taken at once, on the old port
        c = e2e.Client(ports["term"])
        try:
            assert c.transact(e2e.purchase(100, terminal="NEWT0001"))["39"] != "03"
        finally:
            c.close()
        # the listener change is still reported on the next reload, nothing new applied
        status, body = post(ports["http"], "/admin/reload")
        assert body["message"] == f"reloaded {proc.config}; applied: no changes; not applied, needs a restart: listeners[0].port"
    finally:
        proc.stop()
