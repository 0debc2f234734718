"""Entry points ``payswitch.acquirers`` → ``wallet-tradepay``, ``wallet-micropay``: wallets from configuration.

Credentials are read from the files the configuration names (never keys in
the configuration itself); a file that cannot be read or parsed is a
configuration error naming its key.
"""
from __future__ import annotations

from pathlib import Path

from switch.secret_refs import shown


def _read(a, key: str, index: int) -> bytes:
    path = getattr(a, key)
    try:
        return Path(path).read_bytes()
    except OSError as e:
        from switch.config import ConfigError

        raise ConfigError(f"acquirer {a.name!r}: cannot read {key} {shown(path, 'file')}: {e.strerror} - at `$.acquirers[{index}].{key}`") from None


def _options(a, on_state) -> dict:
    if a.options:
        raise ValueError(f"wallet acquirers take no options table (got {', '.join(sorted(a.options))})")
    from adapters.tls import client_context

    return dict(
        ssl=client_context(a),  # https:// without TLS settings: the system's CAs, verified
        poll_interval=a.poll_interval,
        cancel_margin=a.cancel_margin,
        on_state=on_state,
        pool_size=max(1, a.connections),
        currency=a.currency,
    )


def _passphrase(a, index: int) -> bytes | None:
    """The merchant key's pass phrase (an encrypted PEM), from its file or environment variable."""
    if a.merchant_key_passphrase_env:
        import os

        value = os.environ.get(a.merchant_key_passphrase_env)
        if value is None:
            from switch.config import ConfigError

            raise ConfigError(f"acquirer {a.name!r}: environment variable {shown(a.merchant_key_passphrase_env, 'env')} is not set"
                              f" - at `$.acquirers[{index}].merchant_key_passphrase_env`")
        return value.strip().encode()
    if a.merchant_key_passphrase_file:
        return _read(a, "merchant_key_passphrase_file", index).strip()
    return None


def tradepay(a, index: int = 0, on_state=None):
    from adapters.wallet.tradepay import TradePayAcquirer

    private = _read(a, "merchant_key_file", index)
    public = _read(a, "wallet_public_key_file", index)
    return TradePayAcquirer(
        a.name,
        a.endpoints[0],
        app_id=a.app_id or "payswitch",
        merchant_private_key=private,
        key_password=_passphrase(a, index),
        wallet_public_key=public,
        **_options(a, on_state),
    )


def _micropay_secret(a, index: int) -> bytes:
    """The micropay API key: printable ASCII text (it is written into the signed string), never empty."""
    secret = _read(a, "secret_file", index).strip()
    if not secret or not all(0x20 <= b <= 0x7E for b in secret):
        from switch.config import ConfigError

        raise ConfigError(f"acquirer {a.name!r}: secret_file {shown(a.secret_file, 'file')} must hold the wallet's API key "
                          f"as printable ASCII text - at `$.acquirers[{index}].secret_file`")
    return secret


def micropay(a, index: int = 0, on_state=None):
    from adapters.wallet.micropay import MicroPayAcquirer

    return MicroPayAcquirer(
        a.name,
        a.endpoints[0],
        app_id=a.app_id or "payswitch",
        mch_id=a.mch_id or "1000000001",
        secret=_micropay_secret(a, index),
        **_options(a, on_state),
    )


tradepay.kinds = frozenset({"wallet"})
micropay.kinds = frozenset({"wallet"})
