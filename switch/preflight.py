"""Start-up checks that look at files: what ``serve`` would trip over, found without starting.

:func:`check` runs in ``payswitch check-config`` and first thing in
``payswitch serve``, so both word a problem identically and exit 2 (see
:func:`switch.config.load` for the checks that need no files).  It creates
nothing: the journal key that a first start would create is only checked
for a writable directory.  Errors name the file, the key path and what is
wrong, never a key's content.

An acquirer with a ``[[simulators]]`` entry of the same name whose key files
do not exist yet is left to ``serve``: the sandbox simulator writes them when
it starts (the embedded default's wallets).

Ports already in use are not configuration problems (another process holds
them now): ``serve`` reports them as "cannot start", exit 1.
"""
from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

import msgspec

from switch import config_timing, wiring
from switch.clear_links import links_in_clear
from switch.config import Config, ConfigError
from switch.secret_refs import open_to_others, shown, shown_url

__all__ = ["check", "check_files", "key_beside_journal", "keys_beside_journal", "secrets_open_to_others"]

log = logging.getLogger("payswitch")


def _fail(cfg: Config, path: str, msg: str):
    raise ConfigError(f"{cfg.source}: {shown_url(msg)} - at `$.{path}`")


def _readable(cfg: Config, key_path: str, file: str, what: str) -> None:
    p = Path(file)
    try:
        with p.open("rb"):
            pass
    except IsADirectoryError:
        _fail(cfg, key_path, f"{what} {shown(file, 'file')} is a directory")
    except OSError as e:
        _fail(cfg, key_path, f"cannot read {what} {shown(file, 'file')}: {e.strerror}")


def _journal(cfg: Config) -> None:
    wiring.load_hmac_key(cfg, create=False)
    url = cfg.journal.url
    rest = url.partition("://")[2]
    if url.lower().startswith("sqlite://") and rest != ":memory:":
        path = Path(rest)
        folder = path.parent
        if path.exists():
            if path.is_dir() or not os.access(path, os.R_OK | os.W_OK):
                _fail(cfg, "journal.url", f"journal file {path} is not a readable and writable file")
        elif not folder.is_dir():
            _fail(cfg, "journal.url", f"directory {folder} for the journal does not exist")
        elif not os.access(folder, os.W_OK | os.X_OK):
            _fail(cfg, "journal.url", f"cannot create journal {path}: directory not writable")


def _listeners(cfg: Config) -> None:
    for i, lst in enumerate(cfg.listeners):
        if not lst.tls_cert_file:
            continue
        _readable(cfg, f"listeners[{i}].tls_cert_file", lst.tls_cert_file, "TLS certificate")
        _readable(cfg, f"listeners[{i}].tls_key_file", lst.tls_key_file, "TLS key")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(lst.tls_cert_file, lst.tls_key_file)
        except (OSError, ssl.SSLError) as e:
            why = getattr(e, "reason", None) or e.strerror or str(e)
            _fail(cfg, f"listeners[{i}]", f"TLS certificate {lst.tls_cert_file} and key {lst.tls_key_file} do not load: {why}")


_FILE_KEYS = ("merchant_key_file", "wallet_public_key_file", "secret_file")


def _http(cfg: Config) -> None:
    """The admin token file or variable: read as ``serve`` reads it, before anything starts."""
    from switch.config_security import load_admin_token

    load_admin_token(cfg.http, cfg.source)


def _acquirers(cfg: Config, running: bool) -> None:
    simulated = set() if running else {s.name for s in cfg.simulators}
    for i, a in enumerate(cfg.acquirers):
        files = [getattr(a, key) for key in _FILE_KEYS if getattr(a, key)]
        if a.name in simulated and not all(os.path.exists(f) for f in files):
            # A bundled sandbox simulator writes these key files when it
            # starts; serve builds this acquirer after it did.
            continue
        for key in _FILE_KEYS:
            if getattr(a, key):
                _readable(cfg, f"acquirers[{i}].{key}", getattr(a, key), key.removesuffix("_file").replace("_", " "))
        if a.dialect:
            from switch.config_dialect import dialect_problem

            if os.sep in a.dialect or a.dialect.endswith(".toml"):
                _readable(cfg, f"acquirers[{i}].dialect", a.dialect, "dialect file")
            problem = dialect_problem(a.dialect)
            if problem:
                _fail(cfg, f"acquirers[{i}].dialect", problem)
        # What the adapter itself refuses (bad key contents, options): built
        # and thrown away; a factory does no network I/O.
        wiring.build_acquirer(a, i, None, source=cfg.source)


def _security(cfg: Config) -> None:
    """Spec 8: the module's files, every key the policy names in a software module's store, and
    every host-link MAC key and bound DUKPT device's BDK (software store or HSM key table)."""
    from switch.security import keystore
    from switch.security.config import HsmModuleConfig, SoftwareModuleConfig

    from switch.security import sandbox_only

    module = cfg.security.module
    if isinstance(module, HsmModuleConfig):
        _readable(cfg, "security.module.key_table", module.key_table, "HSM key table")
        if not cfg.sandbox:
            from switch.io.hsm import load_key_table
            from switch.security.module import ModuleUnavailable

            try:
                problem = sandbox_only.table_problem(load_key_table(module.key_table))
            except ModuleUnavailable:
                problem = None  # said below, where the table is needed
            if problem:
                _fail(cfg, "security.module.key_table", f"{module.key_table}: {problem}")
        if any(a.mac_key is not None for a in cfg.acquirers) or any(
                t.dukpt_devices for ms in cfg.security.merchants for t in ms.terminals):
            from switch.io.hsm import load_key_table
            from switch.security.module import ModuleUnavailable

            try:
                table = load_key_table(module.key_table)
            except ModuleUnavailable as e:
                _fail(cfg, "security.module.key_table", str(e))
            _host_mac_keys(cfg, table)
            _dukpt_devices(cfg, table)
        return
    if not isinstance(module, SoftwareModuleConfig):
        return
    _readable(cfg, "security.module.key_store", module.key_store, "key store")
    if module.master_key_file:
        _readable(cfg, "security.module.master_key_file", module.master_key_file, "master key file")
    try:
        master = keystore.read_master_key(module.master_key_file, module.master_key_env)
        names = keystore.load(module.key_store, master)
    except keystore.KeyStoreError as e:
        _fail(cfg, "security.module", str(e))
    if not cfg.sandbox:
        problem = sandbox_only.master_problem(master)
        if problem:
            _fail(cfg, "security.module." + ("master_key_env" if module.master_key_env else "master_key_file"), problem)
        problem = sandbox_only.store_problem(names)
        if problem:
            _fail(cfg, "security.module.key_store", f"{module.key_store}: {problem}")
    for i, ms in enumerate(cfg.security.merchants):
        for j, t in enumerate(ms.terminals):
            name = t.tmk or t.bdk
            if name not in names:
                _fail(cfg, f"security.merchants[{i}].terminals[{j}]", f"no key {name!r} in the key store")
    for i, a in enumerate(cfg.security.acquirers):
        if a.zpk not in names:
            _fail(cfg, f"security.acquirers[{i}].zpk", f"no key {a.zpk!r} in the key store")
    _host_mac_keys(cfg, names)
    _dukpt_devices(cfg, names)


def _dukpt_devices(cfg: Config, keys: dict) -> None:
    """Each bound DUKPT device is named as its BDK's KSNs are: 20 hex digits under a TDES BDK, 24 under an AES one."""
    for i, ms in enumerate(cfg.security.merchants):
        for j, t in enumerate(ms.terminals):
            bdk = keys.get(t.bdk) if t.bdk and t.dukpt_devices else None
            if bdk is None:
                continue  # no binding, or no such key (said above, or by serve for an HSM key table)
            digits = 20 if bdk.algorithm == "tdes" else 24
            for tid, bound in t.dukpt_devices.items():
                key = f"security.merchants[{i}].terminals[{j}].dukpt_devices.{tid}"
                for k, device in enumerate([bound] if isinstance(bound, str) else bound):
                    if len(device) != digits:
                        _fail(cfg, key if isinstance(bound, str) else f"{key}[{k}]",
                              f"device {device} has {len(device)} hex digits: the KSNs of {bdk.algorithm} BDK "
                              f"{t.bdk!r} have {digits}")


def _host_mac_keys(cfg: Config, keys: dict) -> None:
    """Every acquirer's ``mac_key`` is in the module (``keys``: name -> kind, algorithm), a ZAK that fits ``mac``."""
    from switch.security.mac import host_mac_key_problem

    for i, a in enumerate(cfg.acquirers):
        if a.mac_key is not None:
            problem = host_mac_key_problem(a.mac, keys.get(a.mac_key))
            if problem:
                _fail(cfg, f"acquirers[{i}].mac_key", f"{a.mac_key!r}: {problem}")


def key_beside_journal(cfg: Config) -> str | None:
    """Why the journal's PAN-hash key sits where one copy of the journal takes it too, or None.

    A key file in the journal's own directory goes into every backup and copy
    of the journal, and with it the PAN hashes can be tried against every
    card number of a BIN (issue 8).  The sandbox (the embedded default, or
    ``sandbox = true``) keeps them together on purpose.
    """
    found = keys_beside_journal(cfg)
    return found[0][1] if found and found[0][0].startswith("journal") else None


def keys_beside_journal(cfg: Config) -> list[tuple[str, str]]:
    """(key path, why) of every key or secret file in the journal's directory: the journal's own
    key (named or where it would be created) first, then every file a ``*_file`` key of a secret
    names (:data:`_SECRET_FILES`).  The journal's directory is backed up and shipped; a key
    travelling with it protects nothing (PCI DSS 3.6.1: keys stored apart from the data)."""
    rest = cfg.journal.url.partition("://")[2]
    if rest in ("", ":memory:") or cfg.sandbox or _embedded_default(cfg):
        return []
    folder = Path(rest).resolve().parent
    found: list[tuple[str, str]] = []
    key = wiring.journal_key_path(cfg)
    if key is not None and key.resolve().parent == folder:
        found.append(("journal.hmac_key_file" if cfg.journal.hmac_key_file else "journal", (
            f"the journal key file {key} is in the journal's directory: keep it apart "
            "(another directory or volume, or hmac_key_env) so a copy of the journal never carries its key")))

    for where, value in _secret_files(cfg):
        if value and where != "journal.hmac_key_file" and Path(value).resolve().parent == folder:
            found.append((where, f"the key file {shown(value, 'file')} is in the journal's directory, "
                                 "which is backed up and shipped with the journal: keep it apart"))
    return found


# Configuration keys naming a file whose content is a secret: a key, a token, a pass phrase.
_SECRET_FILES = frozenset({
    "hmac_key_file", "admin_token_file", "tls_key_file", "merchant_key_file", "merchant_key_passphrase_file",
    "secret_file", "master_key_file", "key_file",
})


def _secret_files(obj, path: str = ""):
    """(key path, value) of every key of :data:`_SECRET_FILES` set to a string, anywhere in ``obj``."""
    if isinstance(obj, msgspec.Struct):
        for name in obj.__struct_fields__:
            value = getattr(obj, name)
            where = f"{path}.{name}" if path else name
            if name in _SECRET_FILES and isinstance(value, str):
                yield where, value
            elif name not in _SECRET_FILES:
                yield from _secret_files(value, where)
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _secret_files(item, f"{path}[{i}]")


def _embedded_default(cfg: Config) -> bool:
    from switch.config import default

    return msgspec.structs.replace(cfg, source="<embedded default>") == default()


def secrets_open_to_others(cfg: Config) -> list[str]:
    """A warning for each key or secret file the configuration names that its
    owner's group or anyone else may read or write (PCI DSS 3.5: access to
    keys restricted to the fewest custodians), naming the file and the key path.

    The embedded default's keys are the sandbox's, public on purpose.
    """
    if _embedded_default(cfg):
        return []
    found: list[str] = []
    for where, value in _secret_files(cfg):
        why = open_to_others(value)  # None when missing or unreadable: the checks above name it
        if why:
            found.append(f"{cfg.source}: {why} - at `$.{where}`")
    return found


def check_files(cfg: Config, *, running: bool = False) -> None:
    """Raise :class:`ConfigError` for a file the configuration names that is
    missing, unreadable or wrong, warning about nothing: what a reload checks
    too, so that a file a restart would refuse is never taken.

    ``running`` (a reload): the bundled simulators started long ago, so a key
    file of theirs still missing is missing (at a start they write it first)."""
    _journal(cfg)
    _listeners(cfg)
    _http(cfg)
    _acquirers(cfg, running)
    _security(cfg)
    _vas(cfg, running)


def check(cfg: Config, *, key_apart: bool = False) -> None:
    """Raise :class:`ConfigError` for the first problem ``serve`` would meet at start-up.

    A key or secret file in the journal's directory is an error for both
    (``key_apart`` is kept for callers; it changes nothing).  Secret files open to others than their owner, and a drain_timeout that
    would give up calls still answerable, are warned about by both.
    """
    check_files(cfg)
    for path, why in keys_beside_journal(cfg):  # serve as check-config: a key never travels with the journal
        _fail(cfg, path, why)
    for warning in secrets_open_to_others(cfg):
        log.warning("%s", warning)
    for warning in links_in_clear(cfg):
        log.warning("%s", warning)
    short_drain = config_timing.drain_warning(cfg)
    if short_drain:
        log.warning("%s", short_drain)


def _vas(cfg: Config, running: bool) -> None:
    """Secrets of value-added services (a bundled simulator writes its own) and token keys."""
    from switch.io.vas import check_token_key_folders, read_secret, token_key_path

    simulated = set() if running else {s.name for s in cfg.simulators}
    for i, s in enumerate(cfg.vas):
        if s.secret_env or (s.secret_file and s.name not in simulated):
            where = f"vas[{i}].{'secret_env' if s.secret_env else 'secret_file'}"
            if s.type == "http":  # as the http service reads it: at least 16 bytes as hex
                read_secret(cfg.source, "service secret", s.secret_file, s.secret_env, where)
            elif s.secret_file:  # a plugin type reads its secret its own way
                _readable(cfg, where, s.secret_file, "service secret")
    for i, k in enumerate(cfg.token_keys):
        if k.key_file or k.key_env:  # read as serve reads it: at least 16 bytes as hex
            read_secret(cfg.source, "token key", k.key_file, k.key_env, token_key_path(i, k))
    check_token_key_folders(cfg)
