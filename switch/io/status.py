"""The operator status page (``GET /status``) and the JSON it polls (``GET /status.json``).

The page is one self-contained HTML document (inline CSS, script and SVG, no
external assets): it polls ``/status.json`` every few seconds and draws, per
payment kind, throughput, approval rate and p99 latency over the last few
minutes from the differences between polls.  The JSON carries cumulative
values read off the metrics registry, so what the page shows as totals is what
``/metrics`` says.

Definitions (the same as the alert rules and the dashboard):

- *answered*: every answer of the kind (``payswitch_requests_total``);
- *approval rate*: answers with code 00 among authorization and financial
  requests (message classes ``auth`` and ``financial``);
- *p99*: the 0.99 quantile of ``payswitch_request_seconds``, interpolated
  within buckets as Prometheus' ``histogram_quantile`` does.
"""
from __future__ import annotations

import math
import time

DECISION_CLASSES = ("auth", "financial")


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """``histogram_quantile`` over cumulative ``(upper bound, count)`` pairs (sorted, +Inf last)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le  # Prometheus answers the highest finite bound
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def _samples(metric, suffix: str):
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith(suffix):
                yield s


def snapshot(metrics, ready: dict) -> dict:
    """What the status page shows, read off ``metrics`` now."""
    kinds: dict[str, dict] = {}

    def kind(k: str) -> dict:
        return kinds.setdefault(k, {"answered": 0, "decisions": 0, "approved": 0, "buckets": {}, "in_flight": 0})

    for s in _samples(metrics.requests, "_total"):
        entry = kind(s.labels["kind"])
        entry["answered"] += s.value
        if s.labels["mclass"] in DECISION_CLASSES:
            entry["decisions"] += s.value
            if s.labels["code"] == "00":
                entry["approved"] += s.value
    for s in _samples(metrics.latency, "_bucket"):
        le = float(s.labels["le"])
        kind(s.labels["kind"])["buckets"][le] = s.value
    for s in _samples(metrics.in_flight_requests, ""):
        kind(s.labels["kind"])["in_flight"] = s.value
    out_kinds = {}
    routed = ready.get("kinds", {})
    for k, e in sorted(kinds.items()):
        if k not in routed and not e["answered"]:
            continue  # a kind this switch neither routes nor has seen
        buckets = sorted(e["buckets"].items())
        p99 = quantile(0.99, buckets)
        out_kinds[k] = {
            "answered": int(e["answered"]),
            "decisions": int(e["decisions"]),
            "approved": int(e["approved"]),
            "approval_rate": e["approved"] / e["decisions"] if e["decisions"] else None,
            "p99_seconds": p99,
            "in_flight": int(e["in_flight"]),
            "buckets": [["+Inf" if math.isinf(le) else le, int(c)] for le, c in buckets],
        }
    connections: dict[str, dict] = {}
    for s in _samples(metrics.acquirer_connections, ""):
        if s.value:
            ep = connections.setdefault(s.labels["acquirer"], {}).setdefault(s.labels["endpoint"], {})
            ep[s.labels["state"]] = int(s.value)
    circuits: dict[str, dict] = {}
    for s in _samples(metrics.circuit_state, ""):
        circuits.setdefault(s.labels["acquirer"], {})[s.labels["endpoint"]] = int(s.value)
    acquirers = [
        {
            "name": name,
            "up": up,
            "connections": connections.get(name, {}),
            "circuits": circuits.get(name, {}),
        }
        for name, up in sorted(ready["acquirers"].items())
    ]
    queue = sum(s.value for s in _samples(metrics.reversal_queue, ""))
    return {
        "time": time.time(),
        "ready": ready["ready"],
        "reasons": ready["reasons"],
        "journal": ready["journal"],
        "kinds": out_kinds,
        "acquirers": acquirers,
        "reversals": {
            "queue": int(queue),
            "oldest_age_seconds": metrics.reversal_oldest_age(),
            # Refused by the acquirer for good: not in the queue, waiting for an operator.
            "refused": int(sum(s.value for s in _samples(metrics.reversal_refused, ""))),
        },
    }


def merge(docs: dict[int, dict], workers: list[dict]) -> dict:
    """The whole switch's snapshot under ``serve --workers``: the workers' own
    (``docs``, by worker index, those that answered) added up, and each worker's
    state (``workers``: the supervisor's entries).  Ready when every worker is."""
    kinds: dict[str, dict] = {}
    acquirers: dict[str, dict] = {}
    reasons: list[str] = []
    journal = {"ok": True, "detail": ""}
    for w in workers:
        if w["state"] != "ready":
            reasons.append(f"worker {w['worker']}: {w['state']}")
        elif w["worker"] not in docs:
            reasons.append(f"worker {w['worker']}: no answer")
    for index, doc in sorted(docs.items()):
        reasons += [f"worker {index}: {r}" for r in doc.get("reasons", ())]
        if journal["ok"] and not doc["journal"]["ok"]:
            journal = doc["journal"]  # one journal, shared: the first worker that finds it failing says why
        for name, k in doc["kinds"].items():
            into = kinds.setdefault(name, {"answered": 0, "decisions": 0, "approved": 0, "in_flight": 0, "buckets": {}})
            for key in ("answered", "decisions", "approved", "in_flight"):
                into[key] += k[key]
            for le, count in k["buckets"]:
                le = math.inf if le == "+Inf" else float(le)
                into["buckets"][le] = into["buckets"].get(le, 0) + count
        for a in doc["acquirers"]:
            into = acquirers.setdefault(a["name"], {"name": a["name"], "up": False, "connections": {}, "circuits": {}})
            into["up"] = into["up"] or a["up"]
            for ep, by_state in a["connections"].items():
                counts = into["connections"].setdefault(ep, {})
                for state, n in by_state.items():
                    counts[state] = counts.get(state, 0) + n
            for ep, state in a["circuits"].items():  # each worker's breaker: the worst one shows
                into["circuits"][ep] = max(state, into["circuits"].get(ep, state))
    out_kinds = {}
    for name, k in sorted(kinds.items()):
        buckets = sorted(k.pop("buckets").items())
        out_kinds[name] = {**k, "approval_rate": k["approved"] / k["decisions"] if k["decisions"] else None,
                           "p99_seconds": quantile(0.99, buckets),
                           "buckets": [["+Inf" if math.isinf(le) else le, c] for le, c in buckets]}
    revs = [doc["reversals"] for doc in docs.values()]
    return {
        "time": time.time(),
        "ready": not reasons,
        "reasons": reasons,
        "journal": journal,
        "kinds": out_kinds,
        "acquirers": [acquirers[name] for name in sorted(acquirers)],
        "reversals": {  # only the reversal sender (worker 0) counts the journal's queue and refusals
            "queue": sum(r["queue"] for r in revs),
            "oldest_age_seconds": max((r["oldest_age_seconds"] for r in revs), default=0.0),
            "refused": max((r["refused"] for r in revs), default=0),
        },
        "workers": workers,
    }


PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>payswitch status</title>
<style>
 body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;background:#fafafa;color:#222}
 h1{font-size:20px;margin:0 0 .3em} h2{font-size:16px;margin:1.2em 0 .4em}
 .badge{display:inline-block;padding:.1em .6em;border-radius:1em;color:#fff;font-weight:600}
 .ok{background:#2a7d2a}.bad{background:#b42318}.warn{background:#b7791f}
 .kinds{display:flex;flex-wrap:wrap;gap:1em}
 .kind{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em .8em;min-width:300px}
 .kind h3{margin:0 0 .3em;font-size:15px}
 .row{display:flex;justify-content:space-between;gap:1em;align-items:center}
 .num{font-variant-numeric:tabular-nums;font-weight:600}
 svg{background:#f3f5f8;border-radius:3px}
 table{border-collapse:collapse;background:#fff}
 td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
 .muted{color:#666;font-size:12px}
</style></head>
<body>
<h1>payswitch <span id="ready" class="badge warn">loading</span></h1>
<div class="muted">refreshes every <span id="every"></span>s &middot; last update <span id="updated">never</span>
 <span id="error"></span></div>
<div id="reasons"></div>
<h2>Payment kinds</h2>
<div class="kinds" id="kinds"></div>
<h2>Acquirer links</h2>
<table><thead><tr><th>acquirer</th><th>state</th><th>connections</th><th>circuit</th></tr></thead>
<tbody id="acquirers"></tbody></table>
<h2>Reversals and journal</h2>
<table><tbody>
<tr><th>reversal queue</th><td class="num" id="rev-queue">-</td></tr>
<tr><th>oldest waiting</th><td class="num" id="rev-age">-</td></tr>
<tr><th>refused by the acquirer</th><td class="num" id="rev-refused">-</td></tr>
<tr><th>journal</th><td id="journal">-</td></tr>
</tbody></table>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const EVERY = Math.max(0.5, parseFloat(params.get("refresh") || "2"));
const KEEP = 90;  // samples per chart
const history = [];
document.getElementById("every").textContent = EVERY;

function quantile(q, buckets) {  // [[le, cumulative count]], le "+Inf" last
  if (!buckets.length) return null;
  const total = buckets[buckets.length - 1][1];
  if (total <= 0) return null;
  const rank = q * total;
  let pl = 0, pc = 0;
  for (const [leRaw, c] of buckets) {
    const le = leRaw === "+Inf" ? Infinity : leRaw;
    if (c >= rank) {
      if (le === Infinity) return pl;
      if (c === pc) return le;
      return pl + (le - pl) * (rank - pc) / (c - pc);
    }
    pl = le; pc = c;
  }
  return pl;
}
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function fmtPct(x) { return x === null ? "-" : (100 * x).toFixed(1) + "%"; }
function fmtMs(x) { return x === null ? "-" : (1000 * x).toFixed(1) + " ms"; }
function fmtAge(s) { return s < 120 ? s.toFixed(0) + " s" : (s / 60).toFixed(1) + " min"; }

function spark(points, color, fmt) {  // newest on the right, KEEP polls wide
  const W = 280, H = 44, NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H);
  const vals = points.filter(v => v !== null);
  if (vals.length) {
    const max = Math.max(...vals) || 1;
    let d = "", pen = false;
    points.forEach((v, i) => {
      if (v === null) { pen = false; return; }
      const x = W - 2 - (points.length - 1 - i) * (W - 4) / (KEEP - 1);
      const y = H - 3 - (H - 14) * v / max;
      d += (pen ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1); pen = true;
    });
    const p = document.createElementNS(NS, "path");
    p.setAttribute("d", d); p.setAttribute("fill", "none");
    p.setAttribute("stroke", color); p.setAttribute("stroke-width", "1.6");
    svg.appendChild(p);
    const label = document.createElementNS(NS, "text");
    label.setAttribute("x", 3); label.setAttribute("y", 10);
    label.setAttribute("font-size", "9"); label.setAttribute("fill", "#666");
    label.textContent = "max " + fmt(max);
    svg.appendChild(label);
  }
  return svg;
}

function windowed(kind) {  // per poll interval: throughput, approval, p99
  const tp = [], ap = [], p99 = [];
  for (let i = 1; i < history.length; i++) {
    const a = history[i - 1], b = history[i];
    const ka = a.kinds[kind], kb = b.kinds[kind];
    if (!ka || !kb) { tp.push(null); ap.push(null); p99.push(null); continue; }
    const dt = b.time - a.time;
    tp.push(dt > 0 ? (kb.answered - ka.answered) / dt : null);
    const dd = kb.decisions - ka.decisions;
    ap.push(dd > 0 ? (kb.approved - ka.approved) / dd : null);
    const db = kb.buckets.map(([le, c], j) => [le, c - (ka.buckets[j] ? ka.buckets[j][1] : 0)]);
    p99.push(quantile(0.99, db));
  }
  return {tp, ap, p99};
}

function render(doc) {
  const ready = document.getElementById("ready");
  ready.textContent = doc.ready ? "ready" : "not ready";
  ready.className = "badge " + (doc.ready ? "ok" : "bad");
  const reasons = document.getElementById("reasons");
  reasons.replaceChildren(...doc.reasons.map(r => el("div", {"class": "bad badge"}, r)));
  const kinds = document.getElementById("kinds");
  kinds.replaceChildren();
  for (const [name, k] of Object.entries(doc.kinds)) {
    const w = windowed(name);
    const box = el("div", {"class": "kind", "id": "kind-" + name});
    box.appendChild(el("h3", {}, name));
    const rows = [
      ["answered", "answered", String(k.answered), w.tp, "#1f6feb", v => v === null ? "-" : v.toFixed(1) + "/s"],
      ["approval", "approval rate", fmtPct(k.approval_rate), w.ap, "#2a7d2a", fmtPct],
      ["p99", "p99 latency", fmtMs(k.p99_seconds), w.p99, "#b7791f", fmtMs],
    ];
    for (const [key, label, total, series, color, fmt] of rows) {
      const r = el("div", {"class": "row"});
      r.appendChild(el("span", {}, label));
      r.appendChild(el("span", {"class": "num", "id": name + "-" + key}, total));
      box.appendChild(r);
      const last = series.length ? series[series.length - 1] : null;
      const r2 = el("div", {"class": "row muted"});
      r2.appendChild(el("span", {}, "now: " + fmt(last)));
      box.appendChild(r2);
      box.appendChild(spark(series, color, fmt));
    }
    box.appendChild(el("div", {"class": "muted"}, "in flight: " + k.in_flight));
    kinds.appendChild(box);
  }
  const tbody = document.getElementById("acquirers");
  tbody.replaceChildren();
  for (const a of doc.acquirers) {
    const tr = el("tr", {"id": "acq-" + a.name});
    tr.appendChild(el("td", {}, a.name));
    const st = el("td", {"id": "acq-" + a.name + "-state"}, a.up ? "up" : "down");
    st.className = "badge " + (a.up ? "ok" : "bad");
    tr.appendChild(st);
    const conns = Object.entries(a.connections).map(([ep, s]) =>
      ep + ": " + Object.entries(s).map(([k, v]) => v + " " + k).join(", ")).join("; ");
    tr.appendChild(el("td", {"id": "acq-" + a.name + "-connections"}, conns || "-"));
    const names = ["closed", "half-open", "open"];
    const circ = Object.entries(a.circuits).map(([ep, v]) => ep + ": " + names[v]).join("; ");
    tr.appendChild(el("td", {}, circ || "-"));
    tbody.appendChild(tr);
  }
  document.getElementById("rev-queue").textContent = String(doc.reversals.queue);
  document.getElementById("rev-age").textContent = doc.reversals.queue ? fmtAge(doc.reversals.oldest_age_seconds) : "-";
  const refused = document.getElementById("rev-refused");
  refused.textContent = String(doc.reversals.refused);
  refused.className = doc.reversals.refused ? "num bad badge" : "num";
  const j = document.getElementById("journal");
  j.textContent = doc.journal.ok ? "writable" : "FAILING: " + doc.journal.detail;
  j.className = doc.journal.ok ? "" : "bad badge";
  document.getElementById("updated").textContent = new Date(doc.time * 1000).toLocaleTimeString();
  document.body.dataset.polls = String(history.length);
}

async function poll() {
  try {
    const r = await fetch("status.json", {cache: "no-store"});
    const doc = await r.json();
    history.push(doc);
    if (history.length > KEEP + 1) history.shift();
    render(doc);
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "(switch unreachable: " + e + ")";
    const ready = document.getElementById("ready");
    ready.textContent = "unreachable"; ready.className = "badge bad";
  }
  setTimeout(poll, EVERY * 1000);
}
poll();
</script>
</body></html>
"""
