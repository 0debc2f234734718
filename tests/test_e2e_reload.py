"""A reload answers what it applied and, by key path, what needs a restart."""
import json
import signal

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


def test_a_reload_with_timing_keys_out_of_order_keeps_the_running_configuration(tmp_path):
    ports = {"term": e2e.free_port(), "http": e2e.free_port()}
    text = e2e.base_config(tmp_path, ports)  # reversal_retry = 0.5
    proc = e2e.SwitchProcess(tmp_path, text, ports).start()
    try:
        bad = text.replace("reversal_retry = 0.5", "reversal_retry = 0.5\nreversal_backoff_max = 0.2")
        assert bad != text
        proc.config.write_text(bad)
        why = (f"{proc.config}: 0.2 is below reversal_retry (0.5): the wait between repeats of a reversal"
               " doubles from reversal_retry up to reversal_backoff_max - at `$.reversal_backoff_max`")
        # SIGHUP: refused, and the log says why
        proc.proc.send_signal(signal.SIGHUP)
        e2e.wait_for(lambda: why in proc.log_text())
        assert f"reload rejected, keeping the running configuration: {why}" in proc.log_text()
        # the admin API: refused with the same line
        status, body = post(ports["http"], "/admin/reload")
        assert (status, body) == (400, {"reloaded": False, "message": why})
        _, metrics = proc.http_get("/metrics")
        assert b'payswitch_config_reloads_total{result="rejected"} 2.0' in metrics
        # the running configuration never took the bad value: the first file again changes nothing
        proc.config.write_text(text)
        status, body = post(ports["http"], "/admin/reload")
        assert (status, body["message"]) == (200, f"reloaded {proc.config}; applied: no changes")
    finally:
        proc.stop()
