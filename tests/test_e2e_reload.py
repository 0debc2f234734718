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


def test_a_reload_naming_a_missing_key_file_is_rejected_and_says_so_on_metrics(tmp_path):
    """A file that a restart would refuse (check-config exits 2 on it) is not taken by a reload
    either: one ERROR line names the key path and the file, /metrics shows the refusal until
    a reload is taken, so the alert fires before anything restarts the switch."""
    ports = {"term": e2e.free_port(), "http": e2e.free_port()}
    text = e2e.base_config(tmp_path, ports)
    proc = e2e.SwitchProcess(tmp_path, text, ports).start()
    try:
        _, metrics = proc.http_get("/metrics")
        assert b'payswitch_config_reloads_total{result="rejected"} 0.0' in metrics  # a rate from the first one
        assert b"payswitch_config_last_reload_successful 1.0" in metrics
        key = str(tmp_path / "keys" / "journal.key")
        assert f'hmac_key_file = "{key}"' in text
        missing = tmp_path / "moved" / "journal.key"
        proc.config.write_text(text.replace(f'hmac_key_file = "{key}"', f'hmac_key_file = "{missing}"'))
        # the key file's name is a value of the file: the key path says which (check-config shows it)
        why = (f"{proc.config}: cannot read journal key file <value not shown>: No such file or directory"
               " - at `$.journal.hmac_key_file`")
        proc.proc.send_signal(signal.SIGHUP)
        assert e2e.wait_for(lambda: "reload rejected" in proc.log_text()), proc.log_text()
        line = next(ln for ln in proc.log_text().splitlines() if "reload rejected" in ln)
        assert line.endswith(f"ERROR payswitch: reload rejected, keeping the running configuration: {why}"
                             ' (fix the file and reload again; runbook: "Configuration reload rejected")'), line
        _, metrics = proc.http_get("/metrics")
        assert b'payswitch_config_reloads_total{result="rejected"} 1.0' in metrics
        assert b"payswitch_config_last_reload_successful 0.0" in metrics
        status, body = post(ports["http"], "/admin/reload")
        assert (status, body) == (400, {"reloaded": False, "message": why})
        # the file fixed: taken, and the gauge says so
        proc.config.write_text(text)
        status, body = post(ports["http"], "/admin/reload")
        assert (status, body["message"]) == (200, f"reloaded {proc.config}; applied: no changes")
        _, metrics = proc.http_get("/metrics")
        assert b"payswitch_config_last_reload_successful 1.0" in metrics
        assert b'payswitch_config_reloads_total{result="ok"} 1.0' in metrics
    finally:
        proc.stop()


def test_a_refused_reload_quotes_no_value_of_the_file_in_its_answer_or_its_log(tmp_path):
    """A PCI assessor's probe: a secret pasted where a value belongs is not echoed by the
    admin API (whoever holds its token) nor written to the log; file and key path are."""
    ports = {"term": e2e.free_port(), "http": e2e.free_port()}
    text = e2e.base_config(tmp_path, ports)
    proc = e2e.SwitchProcess(tmp_path, text, ports).start()
    secret = "sk_live_PAYSWITCH_TOP_SECRET_42"
    try:
        assert "\n[journal]\n" in text
        proc.config.write_text(text.replace("\n[journal]\n", f'\n[journal]\nwriter = "{secret}"\n'))
        why = f'{proc.config}: must be "thread" or "process", got <value not shown> - at `$.journal.writer`'
        status, body = post(ports["http"], "/admin/reload")
        assert (status, body) == (400, {"reloaded": False, "message": why})
        assert e2e.wait_for(lambda: f"reload rejected, keeping the running configuration: {why}" in proc.log_text())
        assert secret not in proc.log_text()
    finally:
        proc.stop()
