"""Links configured in clear (PCI DSS 4.2: cardholder data is encrypted wherever it crosses a network).

``serve`` and ``check-config`` warn, once per link, naming its key path:
terminal listeners without a certificate, card and city-card acquirer links
without ``tls``, wallet endpoints, value-added services and webhooks over
``http://``, NATS over ``nats://`` and an admin API (which speaks plain
HTTP) bound beyond loopback.  A link to a loopback address never leaves
the machine and is not named.  These are warnings, not errors: a link may
run inside a tunnel or a private network the switch cannot see.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from switch.config_security import is_loopback, tls_wanted
from switch.secret_refs import shown_url

__all__ = ["links_in_clear"]

_HOSTPORT = ("card", "citycard")


def _host_of(endpoint: str) -> str:
    if "://" in endpoint:
        return urlsplit(endpoint).hostname or ""
    return endpoint.rpartition(":")[0].strip("[]") or endpoint


def links_in_clear(cfg) -> list[str]:
    """One warning line per link that carries data without TLS to a non-loopback address."""
    src = cfg.source
    out: list[str] = []

    def warn(path: str, what: str) -> None:
        out.append(f"{src}: {what} is in clear (no TLS): card data and keys would cross the network readable "
                   f"- at `$.{path}`")

    for i, lst in enumerate(cfg.listeners):
        if not lst.tls_cert_file and not is_loopback(lst.host):
            warn(f"listeners[{i}]", f"terminal listener {lst.host}:{lst.port}")
    if not is_loopback(cfg.http.host):
        warn("http.host", f"admin API {cfg.http.host}:{cfg.http.port} (plain HTTP: put a TLS proxy before it)")
    for i, a in enumerate(cfg.acquirers):
        for j, ep in enumerate(a.endpoints):
            host = _host_of(ep)
            if is_loopback(host):
                continue
            if a.type in _HOSTPORT and not tls_wanted(a):
                warn(f"acquirers[{i}].endpoints[{j}]", f"acquirer link {a.name!r} to {ep}")
            elif "://" in ep and ep.startswith("http://"):
                warn(f"acquirers[{i}].endpoints[{j}]", f"acquirer link {a.name!r} to {shown_url(ep)}")
    for i, s in enumerate(cfg.vas):
        if s.url.startswith("http://") and not is_loopback(_host_of(s.url)):
            warn(f"vas[{i}].url", f"value-added service {s.name!r} at {shown_url(s.url)}")
    for i, p in enumerate(cfg.events.partners):
        if p.webhook and p.webhook.startswith("http://") and not is_loopback(_host_of(p.webhook)):
            warn(f"events.partners[{i}].webhook", f"webhook of partner {p.name!r} at {shown_url(p.webhook)}")
    nats = cfg.events.nats_url
    if nats and not nats.startswith(("tls://", "wss://")) and not is_loopback(_host_of(nats if "://" in nats else "nats://" + nats)):
        warn("events.nats_url", f"NATS at {shown_url(nats)}")
    return out
