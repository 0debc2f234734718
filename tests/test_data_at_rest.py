"""Issue 8, card data at rest: journal files owner-only whatever the umask, the
PAN-hash key versioned and derived apart from the content-digest key, and
check-config refusing a key file kept beside the journal."""
from __future__ import annotations

import hashlib
import hmac
import io
import os
import sqlite3
import stat
import time
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from switch.journal import (
    PAN_KEY_VERSION,
    TxnRecord,
    digest_key,
    open_journal,
    pan_key,
    pan_protect,
    same_pan,
)
from switch.journal.__init__ import hkdf_sha256
from switch.journal.sqlite import MIGRATIONS, SCHEMA_VERSION

ROOT = Path(__file__).resolve().parent.parent
SECRET = bytes.fromhex("0b" * 32)
PAN = "4111111111111111"


def txn(stan: int, **kw) -> TxnRecord:
    return TxnRecord(terminal_id="DEMO0001", merchant_id="DEMO00000000001", mti="0200", stan="%06d" % stan,
                     transmission_time="1124065401", processing_code="000000", amount=1000, currency="978", **kw)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_journal_files_are_owner_only_whatever_the_umask(tmp_path, umask):
    path = tmp_path / "j.sqlite"
    old = os.umask(umask)
    try:
        j = open_journal(f"sqlite://{path}", hmac_key=SECRET)
        masked, pan_hash = pan_protect(PAN, SECRET)
        j.insert(txn(1, pan_masked=masked, pan_hash=pan_hash)).result(5)
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        j.close()
    finally:
        os.umask(old)


def test_an_existing_world_readable_journal_is_brought_to_0600(tmp_path):
    path = tmp_path / "j.sqlite"
    j = open_journal(f"sqlite://{path}")
    j.insert(txn(1)).result(5)
    j.close()
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            os.chmod(f"{path}{suffix}", 0o644)
    j = open_journal(f"sqlite://{path}")
    j.insert(txn(2)).result(5)
    assert mode(path) == 0o600 and mode(Path(f"{path}-wal")) == 0o600
    j.close()


def test_hkdf_matches_rfc_5869_test_case_3():
    # RFC 5869, A.3: SHA-256, zero-length salt (= HashLen zeros) and info.
    okm = hkdf_sha256(bytes.fromhex("0b" * 22), b"", 42)
    assert okm.hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
        "9d201395faa4b61a96c8"
    )


def test_pan_hash_carries_its_key_version_and_keys_are_derived_apart():
    masked, pan_hash = pan_protect(PAN, SECRET)
    assert masked == "411111******1111"
    assert pan_hash.startswith(f"v{PAN_KEY_VERSION}:") and len(pan_hash) == 3 + 64
    # not the secret itself, and not the content-digest key
    assert pan_hash[3:] != hmac.new(SECRET, PAN.encode(), hashlib.sha256).hexdigest()
    assert len({SECRET, pan_key(SECRET), digest_key(SECRET), pan_key(SECRET, 2)}) == 4
    assert pan_hash[3:] == hmac.new(pan_key(SECRET), PAN.encode(), hashlib.sha256).hexdigest()
    assert same_pan(PAN, pan_hash, SECRET)
    assert not same_pan("4111111111111129", pan_hash, SECRET)
    assert not same_pan(PAN, pan_hash, b"another secret of the switch")
    legacy = "v0:" + hmac.new(SECRET, PAN.encode(), hashlib.sha256).hexdigest()
    assert same_pan(PAN, legacy, SECRET)
    assert not same_pan(PAN, legacy[3:], SECRET)  # an unversioned hash names no key


def test_unversioned_hashes_are_refused_and_old_rows_migrate_to_v0(tmp_path):
    path = tmp_path / "old.sqlite"
    j = open_journal(f"sqlite://{path}", hmac_key=SECRET)
    with pytest.raises(ValueError, match="pan_hash"):
        j.insert(txn(1, pan_hash="ab" * 32)).result(5)
    j.close()
    # a journal of the previous schema, with a hash keyed by the secret itself
    path = tmp_path / "prev.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL) STRICT")
    versioned = next(i for i, m in enumerate(MIGRATIONS) if any("'v0:'" in s for s in m))
    for number, statements in enumerate(MIGRATIONS[:versioned], 1):
        for s in statements:
            conn.execute(s)
        conn.execute("INSERT INTO schema_version VALUES (?)", (number,))
    old_hash = hmac.new(SECRET, PAN.encode(), hashlib.sha256).hexdigest()
    conn.execute(
        "INSERT INTO txn (terminal_id, merchant_id, mti, stan, transmission_time, kind, pan_hash, content_digest,"
        " state, reversal_attempts, created_at, updated_at)"
        " VALUES ('DEMO0001', 'M', '0100', '000001', '1124065401', 'card', ?, 'd', 'answered', 0, 0, 0)",
        (old_hash,),
    )
    conn.commit()
    conn.close()
    j = open_journal(f"sqlite://{path}", hmac_key=SECRET)
    rec = j.get(1).result(5)
    assert rec.pan_hash == "v0:" + old_hash and same_pan(PAN, rec.pan_hash, SECRET)
    j.close()
    assert sqlite3.connect(path).execute("SELECT max(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION


def check_config(tmp_path, journal_dir: Path, key_file: Path) -> subprocess.CompletedProcess:
    key_file.write_text(os.urandom(32).hex())
    cfg = tmp_path / "switch.toml"
    cfg.write_text(f'[journal]\nurl = "sqlite://{journal_dir / "journal.sqlite"}"\nhmac_key_file = "{key_file}"\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "switch.cli", "check-config", str(cfg)],
                          capture_output=True, text=True, timeout=60, env=env)


def test_check_config_refuses_a_key_file_beside_the_journal(tmp_path):
    data, keys = tmp_path / "data", tmp_path / "keys"
    data.mkdir()
    keys.mkdir()
    out = check_config(tmp_path, data, data / "journal.key")
    assert out.returncode == 2
    assert "is in the journal's directory" in out.stderr and "journal.hmac_key_file" in out.stderr
    out = check_config(tmp_path, data, keys / "journal.key")
    assert out.returncode == 0, out.stderr


def test_secret_files_open_to_others_are_named_by_check_config_and_serve(tmp_path):
    from switch import config, preflight

    keys = tmp_path / "keys"
    keys.mkdir()
    journal_key, token = keys / "journal.key", keys / "admin.token"
    journal_key.write_text(os.urandom(32).hex())
    token.write_text("admin-token-0123456789abcdef\n")
    journal_key.chmod(0o644)
    token.chmod(0o600)
    text = (f'[http]\nadmin_token_file = "{token}"\n'
            f'[journal]\nurl = "sqlite://{tmp_path / "journal.sqlite"}"\nhmac_key_file = "{journal_key}"\n')
    cfg = config.loads(text, "prod.toml")
    assert preflight.secrets_open_to_others(cfg) == [
        f"prod.toml: secret file {journal_key} is open to others than its owner (mode 0644; chmod 600)"
        " - at `$.journal.hmac_key_file`"
    ]
    token.chmod(0o660)
    journal_key.chmod(0o600)
    assert [w.rsplit(" - at ", 1)[1] for w in preflight.secrets_open_to_others(cfg)] == ["`$.http.admin_token_file`"]
    token.chmod(0o400)
    assert preflight.secrets_open_to_others(cfg) == []
    # check-config says it (and still passes: a warning, as serve gives it)
    journal_key.chmod(0o640)
    (tmp_path / "switch.toml").write_text(text)
    out = subprocess.run([sys.executable, "-m", "switch.cli", "check-config", str(tmp_path / "switch.toml")],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0 and "mode 0640; chmod 600) - at `$.journal.hmac_key_file`" in out.stderr
    # the embedded default's keys are the sandbox's, public on purpose
    assert preflight.secrets_open_to_others(config.default()) == []


def test_payswitch_keys_names_a_master_key_file_open_to_others_as_serve_does(tmp_path, capsys, monkeypatch):
    """The same check and words as check-config and serve (a warning: the command still runs)."""
    from switch.security import keycli

    monkeypatch.setattr(keycli, "no_core_dumps", lambda: None)  # not this process's limits
    master, store = tmp_path / "master.key", tmp_path / "keys.json"
    assert keycli.main(["new-master", "--out", str(master)]) == 0
    assert keycli.main(["init", "--store", str(store), "--master-key-file", str(master)]) == 0
    assert "warning" not in capsys.readouterr().err  # written 0600
    for mode, command in ((0o640, ["list"]), (0o604, ["init"]), (0o660, ["import", "--name", "zpk-x", "--kind",
                                                                          "zpk", "--algorithm", "tdes", "--kcv", "000000"])):
        master.chmod(mode)
        monkeypatch.setattr("sys.stdin", io.StringIO("0123456789ABCDEFFEDCBA9876543210\n"))
        keycli.main([command[0], "--store", str(tmp_path / f"{command[0]}.json" if command == ["init"] else store),
                     "--master-key-file", str(master), *command[1:]])
        err = capsys.readouterr().err
        assert (f"warning: secret file {master} is open to others than its owner (mode {mode:04o}; chmod 600)"
                " - at `--master-key-file`") in err.splitlines()
    master.chmod(0o400)
    assert keycli.main(["list", "--store", str(store), "--master-key-file", str(master)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_the_sandbox_default_keeps_its_key_beside_the_journal():
    from switch import config, preflight

    assert preflight.key_beside_journal(config.default()) is None
    # the same text from a file is production: refused
    cfg = config.loads(config.DEFAULT_TOML.replace("sandbox = true", "sandbox = false"), "prod.toml")
    assert "journal's directory" in preflight.key_beside_journal(cfg)


def test_cards_the_journal_lets_go_leave_no_bytes_in_its_file(tmp_path, monkeypatch):
    """A reversal's card dropped with its end, and an approved payment's card forgotten after
    card_retention, are gone from the database file once checkpointed. SQLite keeps deleted
    content in a page's free space unless secure_delete zeroes it, and upstream SQLite builds
    leave it off (Debian's turn it on): the journal is opened here as on such a build."""
    from switch.journal import files
    from switch.journal import reversal_card as cards

    connect = files.sqlite3.connect

    def upstream_default(*args, **kw):
        conn = connect(*args, **kw)
        conn.execute("PRAGMA secure_delete = OFF")
        return conn

    monkeypatch.setattr(files.sqlite3, "connect", upstream_default)
    path = tmp_path / "j.sqlite"
    j = open_journal(f"sqlite://{path}", hmac_key=SECRET, writer="thread")
    gone = []
    pending = []
    for stan in range(1, 7):  # every other reversal still waits: its neighbours' cards go
        rec, _ = j.insert(txn(stan, state="sent")).result(5)
        sealed = cards.seal(SECRET, rec.id, PAN)
        j.keep_reversal_card(rec.id, sealed).result(5)
        j.update(rec.id, state="reversal_pending").result(5)
        (gone if stan % 2 else pending).append((rec.id, sealed))
    for txn_id, _ in gone:
        j.end_reversal(txn_id, "reversal_pending", state="reversed").result(5)
    forgotten = []
    for stan in range(7, 13):
        sealed = cards.seal_in_flight(SECRET, ("DEMO0001", "%06d" % stan, "1124065401"), "", PAN)
        rec, _ = j.insert(msgspec.structs.replace(txn(stan, state="sent"), card_sealed=sealed)).result(5)
        j.update(rec.id, state="answered", response_code="00").result(5)
        forgotten.append((rec.id, sealed))
    assert j.forget_cards(time.time() + 1).result(5) == 6
    gone += forgotten
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # what SQLite's auto-checkpoint does while the switch runs
    db.close()

    def left(data: bytes) -> list[int]:
        assert all(sealed[1:] in data for _, sealed in pending)  # the scan finds what is there
        return [txn_id for txn_id, sealed in gone if sealed[1:] in data]

    assert left(path.read_bytes()) == []
    j.close()
    assert not Path(f"{path}-wal").exists()  # the last connection's checkpoint takes the WAL away
    assert left(path.read_bytes()) == []


def test_forgotten_cards_do_not_stay_in_the_wal_after_a_burst(tmp_path):
    """SQLite keeps its WAL file at the largest size it ever reached and only overwrites it from
    the start: after a burst (a reader holding a snapshot while payments go on) the tail held
    sealed cards for as long as the switch ran, long after card_retention had cleared them."""
    from switch.journal import reversal_card as cards

    path = tmp_path / "j.sqlite"
    wal = Path(f"{path}-wal")
    j = open_journal(f"sqlite://{path}", hmac_key=SECRET)
    j.insert(txn(100_000)).result(5)
    reader = sqlite3.connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM txn").fetchone()  # e.g. the event relay, the admin API: no checkpoint
    gone = []
    for stan in range(1, 300):
        sealed = cards.seal_in_flight(SECRET, ("DEMO0001", "%06d" % stan, "1124065401"), "", PAN)
        rec, _ = j.insert(msgspec.structs.replace(txn(stan, state="sent"), card_sealed=sealed)).result(5)
        j.update(rec.id, state="answered", response_code="00").result(5)
        gone.append(sealed)
    reader.rollback()
    reader.close()
    burst = wal.stat().st_size
    assert sum(s[1:] in wal.read_bytes() for s in gone) == len(gone)  # the scan finds what is there
    time.sleep(0.01)
    assert j.forget_cards(time.time()).result(5) == len(gone)
    for stan in range(1000, 1700):  # more than one auto-checkpoint's worth of pages (1000) afterwards
        j.insert(txn(stan)).result(5)
    data = wal.read_bytes()
    assert [i for i, s in enumerate(gone) if s[1:] in data] == []
    assert len(data) < burst
    j.close()
