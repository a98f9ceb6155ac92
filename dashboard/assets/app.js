// The telemetry lab's dashboard page. Plain JavaScript, no framework, no build step.
//
// How data flows:
//   WebSocket message → onFrame(): parse, stamp the receipt time, record latency and seq → state
//   setInterval(1 s)  → roll(): close the second (per-second histograms, rates, gap timeouts)
//   requestAnimationFrame → draw(): only if something changed; text at most 4×/s, charts once a second
// Message handlers never touch the DOM: at 20 000 metrics/s a DOM write per message would be the
// bottleneck, and a frame only needs the latest state.
//
// Latency "seen by this browser" = the time this page receives the frame that carries a metric − the
// metric's `timestamp` (epoch ms, set by the agent that sent it). In the lab both run on one machine,
// so both read the same clock. Batched frames (`metric.updates`) keep every item's own timestamp, so
// each item's latency is exact: batching delays a frame, and that delay is part of the latency.
"use strict";

(() => {
  const SYSTEMS = ["system1", "system2"];
  const NAMES = {system1: "System 1 · HTTP → Redis → workers", system2: "System 2 · WebSocket, in memory"};
  const HISTORY_SECS = 300;           // how far back the time charts go
  const WINDOW_SECS = 10;             // the "last 10 s" of the scoreboard
  const GAP_GRACE_MS = 5000;          // a missing seq is a gap only if still missing after this
  const MAX_MISSING_PER_SERVER = 10000; // bound on remembered missing seqs; beyond, counted as gaps at once
  const MAX_SERVERS = 10000;          // bound on servers tracked per system (the systems' own limit)
  const BACKOFF_MIN_MS = 500, BACKOFF_MAX_MS = 10000, HEALTHY_RESET_MS = 10000;
  const TEXT_EVERY_MS = 250;

  // ---- the receipt clock --------------------------------------------------------------------------
  // performance.now() is precise (µs) but monotonic; Date.now() is the wall clock the agents stamp
  // with, but only to the millisecond. Their offset is measured by sampling both for 1.2 ms (the
  // largest Date.now() − performance.now() seen is the offset to a few µs) and again every 10 s, so a
  // wall-clock adjustment is followed. Receipt time = performance.now() + offset.
  // Cross-origin isolated (the server's COOP/COEP headers, in a secure context): performance.now() is
  // precise to 5 µs in Chrome; otherwise browsers coarsen it to 100 µs (Firefox: 1 ms).
  const clock = {offsetMs: performance.timeOrigin, measuredAt: 0, isolated: !!window.crossOriginIsolated};
  function measureClock() {
    let best = -Infinity;
    const t0 = performance.now();
    while (performance.now() - t0 < 1.2) {
      const d = Date.now() - performance.now();
      if (d > best) best = d;
    }
    clock.offsetMs = best;
    clock.measuredAt = Date.now();
  }
  measureClock();
  setInterval(measureClock, 10000);
  const receiptNow = () => performance.now() + clock.offsetMs;

  // ---- per-system state ---------------------------------------------------------------------------
  function newSystem(name) {
    return {
      name,
      url: null,
      ws: null,
      state: "connecting",      // connecting | open | waiting (to reconnect) | closed
      openedAt: 0,
      attempt: 0,
      backoffMs: BACKOFF_MIN_MS,
      retryAt: 0,
      lastClose: null,          // "1006 (abnormal)" …
      connects: 0,
      frames: 0,
      updates: 0,               // payloads received (each carries one latency)
      metrics: 0,               // seqs accounted for: updates plus what they coalesce
      coalesced: 0,
      duplicates: 0,
      lateAfterGap: 0,          // seqs counted as gaps that arrived after all (then no longer gaps)
      missedAtConnect: 0,       // seqs missing around a (re)connection: see expireGaps
      connectedAt: 0,           // receipt-clock time of the last connection's opening
      gaps: 0,                  // seqs missing for longer than GAP_GRACE_MS
      serverGapEvents: 0,       // `type:"gap"` frames
      serverGapCount: 0,        // their `events`, where a number
      lastServerGap: null,
      negative: 0,              // latencies below 0 (a clock step): recorded as 0, counted here
      errors: 0,                // `type:"error"` frames
      lastError: null,
      ignored: 0,               // frames that carry no latency (acks, metric.ingested)
      servers: new Map(),       // serverId → {last, missing: Map(seq → noticedAt), windows, seen}
      sinceOpen: new LatencyHistogram(),
      thisSecond: new LatencyHistogram(),
      lastSeconds: [],          // the last WINDOW_SECS per-second histograms
      secondUpdates: 0,
      secondMetrics: 0,
      history: {p50: [], p99: [], rate: [], metricsRate: [], agentsRate: [], agentsP99: []},
      health: {level: "unknown", reason: "not polled yet"},
      monitoring: null,
      agents: null,
    };
  }
  const sys = Object.fromEntries(SYSTEMS.map((n) => [n, newSystem(n)]));
  const times = [];                 // seconds (epoch) of the history arrays
  const frameStats = {count: 0, work: [], interval: [], last: 0, longTasks: 0};
  let config = null;
  let dirtyText = true, dirtyCharts = true, lastText = 0;

  // What tests read (window.lab): plain numbers, refreshed once a second and on demand.
  const lab = {systems: {}, frame: {}, clock, errors: [], config: null, snapshot};
  window.lab = lab;
  // For tests of the accounting itself: frames (text, with their receipt times) through the very
  // functions the connections use, into a fresh system state (connected at `connectedAt`, long ago
  // by default); then the gap expiry at `expireAt`; then the frames `after`.
  lab.testing = {
    feed(name, frames, expireAt, after = [], connectedAt = -Infinity) {
      const s = newSystem(name);
      s.connectedAt = connectedAt;
      for (const [text, at] of frames) onFrame(s, text, at);
      if (expireAt !== undefined) expireGaps(s, expireAt);
      for (const [text, at] of after) onFrame(s, text, at);
      return {updates: s.updates, metrics: s.metrics, coalesced: s.coalesced, gaps: s.gaps,
        pendingGaps: pendingGaps(s), lateAfterGap: s.lateAfterGap, missedAtConnect: s.missedAtConnect,
        duplicates: s.duplicates,
        serverGapEvents: s.serverGapEvents, serverGapCount: s.serverGapCount, ignored: s.ignored,
        errors: s.errors, negative: s.negative, latency: s.sinceOpen.summary(), min: s.sinceOpen.min,
        lastSeq: Object.fromEntries([...s.servers].map(([id, v]) => [id, v.last]))};
    },
  };
  window.addEventListener("error", (e) => lab.errors.push(String(e.message || e.type)), true);
  window.addEventListener("unhandledrejection", (e) => lab.errors.push(String(e.reason)));

  // ---- connections --------------------------------------------------------------------------------
  function wsUrl(configured) {
    if (configured.startsWith("/")) {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      return `${scheme}//${location.host}${configured}`;
    }
    return configured;
  }

  function connect(s) {
    s.state = "connecting";
    s.attempt += 1;
    dirtyText = true;
    let ws;
    try {
      ws = new WebSocket(s.url);
    } catch (e) {
      s.lastClose = `cannot open: ${e.message}`;
      scheduleReconnect(s);
      return;
    }
    s.ws = ws;
    ws.onopen = () => {
      s.state = "open";
      s.openedAt = performance.now();
      s.connectedAt = receiptNow();
      s.connects += 1;
      dirtyText = true;
      // Both systems: every server, batched frames (each item keeps its own timestamp and seq, so
      // every latency and gap count stays exact). The browser's cost is per frame: System 1's one
      // event per frame, ingested and processed, was what the page could not keep up with.
      if (s.name === "system2") {
        ws.send(JSON.stringify({type: "register", role: "dashboard", serverId: null, batchUpdates: true}));
      } else {
        ws.send(JSON.stringify({type: "subscribe", serverId: null, batchUpdates: true}));
      }
    };
    ws.onmessage = (event) => onFrame(s, event.data, receiptNow());
    ws.onclose = (event) => {
      if (s.ws !== ws) return;
      s.ws = null;
      s.lastClose = `${event.code}${event.reason ? " " + event.reason : ""}`;
      // A connection that stayed up a while starts the backoff afresh.
      if (s.openedAt && performance.now() - s.openedAt > HEALTHY_RESET_MS) s.backoffMs = BACKOFF_MIN_MS;
      s.openedAt = 0;
      scheduleReconnect(s);
    };
  }

  function scheduleReconnect(s) {
    s.state = "waiting";
    const wait = s.backoffMs;
    s.retryAt = performance.now() + wait;
    s.backoffMs = Math.min(BACKOFF_MAX_MS, s.backoffMs * 2);
    dirtyText = true;
    setTimeout(() => connect(s), wait);
  }

  // ---- what arrives -------------------------------------------------------------------------------
  function onFrame(s, text, receivedAt) {
    s.frames += 1;
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      s.errors += 1;
      s.lastError = "a frame that is not JSON";
      return;
    }
    switch (frame.type) {
      case "metric.update":
      case "metric.processed":
        if (frame.payload) onPayload(s, frame.payload, receivedAt);
        break;
      case "metric.updates":
        if (Array.isArray(frame.items)) for (const p of frame.items) onPayload(s, p, receivedAt);
        break;
      case "gap":
        s.serverGapEvents += 1;
        if (typeof frame.events === "number") s.serverGapCount += frame.events;
        s.lastServerGap = JSON.stringify(frame).slice(0, 200);
        dirtyText = true;
        break;
      case "error":
        s.errors += 1;
        s.lastError = frame.message || "error";
        dirtyText = true;
        break;
      default:
        s.ignored += 1; // connection.ack, register.ack, subscription.ack, metric.ingested
    }
  }

  function onPayload(s, p, receivedAt) {
    if (typeof p.timestamp !== "number") return;
    const latency = receivedAt - p.timestamp;
    if (latency < 0) s.negative += 1;
    s.thisSecond.record(latency);
    s.sinceOpen.record(latency);
    s.updates += 1;
    s.secondUpdates += 1;
    const id = p.serverId;
    let server = s.servers.get(id);
    if (!server) {
      if (s.servers.size >= MAX_SERVERS) return;
      server = {first: -1, last: -1, missing: new Map(), lost: new Map(), windows: null, seen: 0};
      s.servers.set(id, server);
    }
    server.seen = receivedAt;
    if (p.windows) server.windows = p.windows;
    const coalesced = typeof p.coalesced === "number" ? p.coalesced : 0;
    s.coalesced += coalesced;
    if (typeof p.seq === "number") {
      // The seqs this payload stands for: its own, or the range it says it replaces.
      const lo = Math.min(p.seq, typeof p.firstSeq === "number" ? p.firstSeq : p.seq);
      const hi = Math.max(p.seq, typeof p.lastSeq === "number" ? p.lastSeq : p.seq);
      const n = hi - lo + 1;
      s.metrics += n;
      s.secondMetrics += n;
      if (server.last < 0) {
        server.first = lo;                      // first sight: nothing before it is ours to judge
        server.last = hi;
      } else if (lo > server.last) {
        for (let q = server.last + 1; q < lo; q++) {
          if (server.missing.size >= MAX_MISSING_PER_SERVER) { s.gaps += lo - q; break; }
          server.missing.set(q, receivedAt);
        }
        server.last = hi;
      } else {
        // At or before the highest seen: a late arrival fills a hole, else it is a duplicate.
        // Seqs from before the first one seen (System 1's workers may deliver out of order) are
        // neither: the page opened in the middle of the stream.
        for (let q = lo; q <= hi; q++) {
          if (q < server.first) continue;
          if (server.missing.delete(q)) continue;
          const kind = server.lost.get(q);
          if (kind !== undefined) { // late, not lost
            server.lost.delete(q);
            if (kind === "gap") s.gaps -= 1; else s.missedAtConnect -= 1;
            s.lateAfterGap += 1;
            continue;
          }
          if (q <= server.last) s.duplicates += 1;
        }
        if (lo < server.first) server.first = lo;
        if (hi > server.last) server.last = hi;
      }
    } else {
      s.metrics += 1 + coalesced;
      s.secondMetrics += 1 + coalesced;
    }
  }

  // ---- once a second ------------------------------------------------------------------------------
  function roll() {
    const now = receiptNow();
    times.push(Math.floor(now / 1000));
    if (times.length > HISTORY_SECS) times.shift();
    for (const s of Object.values(sys)) {
      expireGaps(s, now);
      s.lastSeconds.push(s.thisSecond);
      if (s.lastSeconds.length > WINDOW_SECS) s.lastSeconds.shift();
      const [p50, p99] = s.thisSecond.quantiles([0.5, 0.99]);
      const h = s.history;
      push(h.p50, p50);
      push(h.p99, p99);
      push(h.rate, s.secondUpdates);
      push(h.metricsRate, s.secondMetrics);
      const a = s.agents && s.agents.second;
      push(h.agentsRate, a ? a.delivered : null);
      push(h.agentsP99, a && a.e2e_latency_ms ? a.e2e_latency_ms.p99 : null);
      s.rate = s.secondUpdates;
      s.metricsRate = s.secondMetrics;
      s.thisSecond = new LatencyHistogram();
      s.secondUpdates = 0;
      s.secondMetrics = 0;
      recordResources(s);
    }
    publish();
    dirtyText = dirtyCharts = true;
  }
  // Missing seqs that did not turn up within the grace are gaps, except those noticed within the
  // grace after a connection opened. Why: System 1's workers publish a server's metrics out of
  // order, so at the moment the page subscribes, seq 101 may already have been published (before the
  // subscription: never ours) while 100 is published after it (ours, and the first seen). 101 then
  // looks missing forever. Seqs missed across a disconnection are noticed at the reconnection too:
  // both are counted as "missed around (re)connections", not as gaps, which are losses in a stream
  // the page was subscribed to.
  function expireGaps(s, now) {
    for (const server of s.servers.values()) {
      for (const [q, at] of server.missing) {
        if (now - at < GAP_GRACE_MS) break; // insertion order = noticing order
        server.missing.delete(q);
        const kind = at - s.connectedAt < GAP_GRACE_MS ? "connect" : "gap";
        if (kind === "gap") s.gaps += 1; else s.missedAtConnect += 1;
        // Remembered (boundedly), so that a seq that turns up even later is taken back.
        server.lost.set(q, kind);
        if (server.lost.size > MAX_MISSING_PER_SERVER) server.lost.delete(server.lost.keys().next().value);
      }
    }
  }

  const push = (arr, v) => { arr.push(v); if (arr.length > HISTORY_SECS) arr.shift(); };

  function last10s(s) {
    const h = new LatencyHistogram();
    for (const x of s.lastSeconds) h.add(x);
    return h.summary();
  }

  function pendingGaps(s) {
    let n = 0;
    for (const server of s.servers.values()) n += server.missing.size;
    return n;
  }

  // window.lab: what a test asserts on.
  function snapshot() {
    publish();
    return JSON.parse(JSON.stringify({systems: lab.systems, frame: lab.frame, clock, errors: lab.errors}));
  }
  function publish() {
    for (const s of Object.values(sys)) {
      const lastSeq = {};
      for (const [id, server] of s.servers) lastSeq[id] = server.last;
      lab.systems[s.name] = {
        connected: s.state === "open",
        state: s.state,
        connects: s.connects,
        frames: s.frames,
        ignored: s.ignored,
        updates: s.updates,
        metrics: s.metrics,
        coalesced: s.coalesced,
        duplicates: s.duplicates,
        lateAfterGap: s.lateAfterGap,
        missedAtConnect: s.missedAtConnect,
        gaps: s.gaps,
        pendingGaps: pendingGaps(s),
        serverGapEvents: s.serverGapEvents,
        serverGapCount: s.serverGapCount,
        negative: s.negative,
        errors: s.errors,
        servers: s.servers.size,
        lastSeq,
        last10s: last10s(s),
        sinceOpen: s.sinceOpen.summary(),
        rate: s.rate || 0,
        health: s.health,
      };
    }
    const q = (arr) => {
      if (!arr.length) return {p50: null, p99: null, max: null};
      const v = [...arr].sort((a, b) => a - b);
      return {p50: v[Math.floor(v.length * 0.5)], p99: v[Math.min(v.length - 1, Math.floor(v.length * 0.99))], max: v[v.length - 1]};
    };
    lab.frame = {count: frameStats.count, workMs: q(frameStats.work), intervalMs: q(frameStats.interval), longTasks: frameStats.longTasks};
  }

  // ---- health and monitoring (relayed by the dashboard server) ------------------------------------
  async function poll(s) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), (config.relayTimeoutMs || 2000) + 1000);
    try {
      const r = await fetch(config[s.name].status, {signal: controller.signal, cache: "no-store"});
      const doc = await r.json();
      s.monitoring = doc.documents;
      s.health = judgeHealth(s.name, doc.documents);
    } catch (e) {
      s.health = {level: "bad", reason: `the dashboard server did not answer: ${e.message}`};
    } finally {
      clearTimeout(timer);
      dirtyText = true;
      setTimeout(() => poll(s), config.pollMs || 1000);
    }
  }

  // Healthy when every health document answered 200 with status "ok"; else the first reason found.
  function judgeHealth(name, docs) {
    const parts = name === "system1" ? ["api.health", "workers.health", "broadcaster.health"] : ["health"];
    for (const part of parts) {
      const d = docs[part];
      const who = part.replace(".health", "").replace("health", "server");
      if (!d) return {level: "bad", reason: `${who}: no answer`};
      if (d.error) return {level: "bad", reason: `${who}: ${d.error}`};
      const status = d.body && d.body.status;
      if (d.status !== 200 || status !== "ok") {
        const detail = d.body && (d.body.redis || d.body.error);
        return {level: "warn", reason: `${who}: ${d.status} ${status || ""}${detail ? ` (redis ${detail})` : ""}`};
      }
    }
    return {level: "ok", reason: name === "system1" ? "api, workers, broadcaster: ok" : "ok"};
  }

  async function pollAgents() {
    try {
      const r = await fetch(config.agents, {cache: "no-store"});
      const doc = await r.json();
      lab.agentsFed = doc.fed;
      for (const s of Object.values(sys)) {
        const a = doc.systems && doc.systems[s.name];
        s.agents = a && a.ageMs < 5000 ? a : null;
      }
    } catch {
      for (const s of Object.values(sys)) s.agents = null;
    } finally {
      setTimeout(pollAgents, 1000);
    }
  }

  // ---- per-server resources -----------------------------------------------------------------------
  const resources = {metric: "cpu", window: null, selected: [], band: {}, lines: {}};
  const METRICS = {cpu: "cpu %", memory: "memory %", disk: "disk %", networkIn: "network in (units/s)", networkOut: "network out (units/s)"};

  function windowKeys(s) {
    for (const server of s.servers.values()) if (server.windows) return Object.keys(server.windows);
    return [];
  }

  function recordResources(s) {
    if (!resources.band[s.name]) resources.band[s.name] = {min: [], med: [], max: []};
    if (!resources.lines[s.name]) resources.lines[s.name] = {};
    const band = resources.band[s.name];
    const values = [];
    const key = resources.window || windowKeys(s)[0];
    for (const [id, server] of s.servers) {
      const w = server.windows && server.windows[key];
      const v = w && w.averages ? w.averages[resources.metric] : null;
      if (typeof v === "number") values.push(v);
      if (resources.selected.includes(id)) {
        const line = resources.lines[s.name][id] || (resources.lines[s.name][id] = new Array(band.min.length).fill(null));
        push(line, typeof v === "number" ? v : null);
      }
    }
    for (const id of resources.selected) {
      if (!s.servers.has(id)) {
        const line = resources.lines[s.name][id] || (resources.lines[s.name][id] = new Array(band.min.length).fill(null));
        push(line, null);
      }
    }
    values.sort((a, b) => a - b);
    push(band.min, values.length ? values[0] : null);
    push(band.med, values.length ? values[Math.floor(values.length / 2)] : null);
    push(band.max, values.length ? values[values.length - 1] : null);
  }

  function resetResources() {
    resources.band = {};
    resources.lines = {};
    dirtyCharts = true;
  }

  // ---- drawing ------------------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const fmt = (ms) => {
    if (ms === null || ms === undefined || !isFinite(ms)) return "–";
    if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
    if (ms < 10) return `${ms.toFixed(2)} ms`;
    if (ms < 1000) return `${ms.toFixed(1)} ms`;
    return `${(ms / 1000).toFixed(2)} s`;
  };
  // Axis labels: as short as they can be (1 ms, 250 µs, 2 s).
  const fmtAxis = (ms) => {
    if (ms === null || !isFinite(ms)) return "";
    if (ms < 1) return `${+(ms * 1000).toPrecision(3)} µs`;
    if (ms < 1000) return `${+ms.toPrecision(3)} ms`;
    return `${+(ms / 1000).toPrecision(3)} s`;
  };
  const int = (n) => (n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en"));

  function drawText() {
    for (const s of Object.values(sys)) {
      const root = $(s.name);
      const set = (field, text, title) => {
        const el = root.querySelector(`[data-f="${field}"]`);
        if (el && el.textContent !== text) el.textContent = text;
        if (el && title !== undefined) el.title = title;
      };
      const w = last10s(s), o = s.sinceOpen.summary();
      set("p50", fmt(w.p50)); set("p99", fmt(w.p99)); set("p999", fmt(w.p999)); set("max", fmt(w.max));
      set("o-p50", fmt(o.p50)); set("o-p99", fmt(o.p99)); set("o-p999", fmt(o.p999)); set("o-max", fmt(o.max));
      set("count", `${int(w.count)} updates in the last 10 s · ${int(o.count)} since open`);
      set("rate", int(s.rate || 0));
      set("mrate", int(s.metricsRate || 0));
      set("gaps", int(s.gaps));
      set("pending", int(pendingGaps(s)));
      set("coalesced", int(s.coalesced));
      set("dups", int(s.duplicates));
      set("late", int(s.lateAfterGap));
      set("atconnect", int(s.missedAtConnect));
      set("servergaps", s.serverGapEvents ? `${int(s.serverGapEvents)} (${int(s.serverGapCount)} events)` : "0", s.lastServerGap || "");
      set("servers", int(s.servers.size));
      root.querySelector('[data-f="gaps"]').classList.toggle("bad", s.gaps > 0);
      // Connection state, with the backoff visible.
      const conn = root.querySelector('[data-f="conn"]');
      let text;
      if (s.state === "open") text = `connected (${s.connects > 1 ? `reconnected ${s.connects - 1}×` : "first connection"})`;
      else if (s.state === "waiting") {
        const left = Math.max(0, (s.retryAt - performance.now()) / 1000);
        text = `disconnected (${s.lastClose || "never connected"}) · retry ${s.attempt + 1} in ${left.toFixed(1)} s`;
      } else text = `connecting… (attempt ${s.attempt})`;
      if (conn.textContent !== text) conn.textContent = text;
      conn.className = `pill ${s.state === "open" ? "ok" : s.state === "waiting" ? "bad" : "warn"}`;
      conn.title = s.url || "";
      const health = root.querySelector('[data-f="health"]');
      const htext = `health: ${s.health.level === "ok" ? "ok" : s.health.reason}`;
      if (health.textContent !== htext) health.textContent = htext;
      health.className = `pill ${s.health.level}`;
      health.title = s.health.reason;
      // The agents' own figures, labelled as theirs.
      const a = s.agents && s.agents.second;
      set("a-rate", a ? int(a.delivered) : "–");
      set("a-p50", a ? fmt(a.e2e_latency_ms.p50) : "–");
      set("a-p99", a ? fmt(a.e2e_latency_ms.p99) : "–");
      set("a-max", a ? fmt(a.e2e_latency_ms.max) : "–");
      set("a-ack", a ? fmt(a.ack_latency_ms.p99) : "–");
      set("a-overdue", a ? (a.overdue === null || a.overdue === undefined ? "–" : int(a.overdue)) : "–");
      root.querySelector(".agents").classList.toggle("absent", !a);
      set("a-note", a ? `second ${a.t} of the run, sent ${int(a.sent)}, acked ${int(a.acked)}` :
        lab.agentsFed ? "waiting for the agents' first second" : "not started by lab up: no agents' figures");
      drawMonitoring(s, root.querySelector(".monitoring"));
    }
    const f = lab.frame;
    $("frame").textContent = f.workMs && f.workMs.p50 !== null
      ? `page: frame work p50 ${f.workMs.p50.toFixed(2)} ms, p99 ${f.workMs.p99.toFixed(2)} ms · receipt clock ${clock.isolated ? "precise (cross-origin isolated)" : "coarse (not isolated: ~100 µs)"}, offset measured ${Math.round((Date.now() - clock.measuredAt) / 1000)} s ago`
      : "";
  }

  // "8: w-1 ×4, w-2 ×4" — how System 1's partitions are spread over its workers (none: "unowned").
  function partitionOwners(partitions) {
    const counts = new Map();
    for (const p of partitions) {
      const owner = p.owner || "unowned";
      counts.set(owner, (counts.get(owner) || 0) + 1);
    }
    const parts = [...counts].sort((a, b) => a[0].localeCompare(b[0])).map(([o, n]) => `${o} ×${n}`);
    return `${partitions.length}: ${parts.join(", ")}`;
  }

  function drawMonitoring(s, el) {
    const d = s.monitoring;
    const rows = [];
    const body = (name) => (d && d[name] && d[name].body) || null;
    const err = (name) => (d && d[name] && d[name].error) || null;
    if (s.name === "system1") {
      const w = body("workers.monitoring"), a = body("api.monitoring"), b = body("broadcaster.monitoring");
      const g = w && w.group;
      rows.push(["stream length", w ? int(w.streamLength) : err("workers.monitoring") || "–", "entries in Redis"]);
      rows.push(["pending", g ? int(g.pending) : "–", "read, not yet acked"]);
      rows.push(["lag", g && g.lag !== undefined && g.lag !== null ? int(g.lag) : "–", "entries not yet read by the group"]);
      rows.push(["consumers", w && w.consumers ? int(w.consumers.length) : "–", "workers in the group"]);
      rows.push(["partitions by owner", w && w.partitions ? partitionOwners(w.partitions) : "–", "each partition has one worker at a time"]);
      rows.push(["trimmed unprocessed", w ? int(w.trimmedUnprocessed) : "–", "lost to the stream cap"]);
      rows.push(["API in-flight slots free", a ? int(a.inFlightAvailable) : err("api.monitoring") || "–", "of --max-in-flight"]);
      rows.push(["API 503s: shed / Redis down", a ? `${int(a.requestsShed)} / ${int(a.redisErrors)}` : "–", "requests answered 503"]);
      rows.push(["metrics accepted", a ? int(a.metricsAccepted) : "–", "202s, since start"]);
      rows.push(["broadcaster coalesced / dropped", b ? `${int(b.updatesCoalesced)} / ${int(b.updatesDropped)}` : err("broadcaster.monitoring") || "–", "events, since start"]);
    } else {
      const m = body("monitoring");
      const c = m && m.connections;
      rows.push(["connections", c ? `${int(c.total)} (${int(c.producers)} producers, ${int(c.dashboards)} dashboards)` : err("monitoring") || "–", ""]);
      rows.push(["servers tracked", m ? int(m.servers.tracked) : "–", "in memory"]);
      rows.push(["ingest", m ? `${int(m.ingest.metricsPerSec)} metrics/s` : "–", "as System 2 counts it"]);
      rows.push(["updates coalesced / dropped", m ? `${int(m.updates.coalesced)} / ${int(m.updates.dropped)}` : "–", "since start"]);
      const depths = m && m.dashboards ? m.dashboards.map((x) => x.queued) : [];
      rows.push(["dashboard queue depths", depths.length ? depths.join(", ") : "–", "updates waiting, per dashboard"]);
      rows.push(["late / stale metrics", m ? `${int(m.ingest.late)} / ${int(m.ingest.stale)}` : "–", "since start"]);
    }
    const html = rows.map(([k, v, unit]) => `<tr><th>${k}</th><td>${escapeHtml(String(v))}</td><td class="unit">${unit}</td></tr>`).join("");
    if (el.dataset.html !== html) { el.innerHTML = html; el.dataset.html = html; }
  }
  const escapeHtml = (t) => t.replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

  // ---- charts (uPlot) -----------------------------------------------------------------------------
  const charts = {};
  const colour = (name) => css(`--${name}`);

  function axisStyle() {
    return {stroke: css("--fg"), grid: {stroke: css("--grid"), width: 1}, ticks: {stroke: css("--grid")}};
  }

  function chartSize(el) {
    return {width: Math.max(280, el.clientWidth), height: Math.max(180, Math.min(260, el.clientWidth * 0.45))};
  }

  function makeCharts() {
    const a = axisStyle();
    const msAxis = (label) => ({...a, label, size: 64, values: (u, vals) => vals.map((v) => fmtAxis(v))});
    const timeAxis = {...a, space: 70};
    const c1 = colour("s1"), c2 = colour("s2");

    let el = $("chart-latency");
    charts.latency = new uPlot({
      ...chartSize(el), title: "end-to-end latency seen by this browser, per second (log scale)",
      scales: {y: {distr: 3}},
      series: [{},
        {label: "S1 p50", stroke: c1, width: 2, value: (u, v) => fmt(v)},
        {label: "S1 p99", stroke: c1, width: 1.5, dash: [6, 4], value: (u, v) => fmt(v)},
        {label: "S2 p50", stroke: c2, width: 2, value: (u, v) => fmt(v)},
        {label: "S2 p99", stroke: c2, width: 1.5, dash: [6, 4], value: (u, v) => fmt(v)}],
      axes: [timeAxis, msAxis("latency")],
    }, [[], [], [], [], []], el);

    el = $("chart-spectrum");
    const qTicks = [0, 1, 2, 3, 4];
    const qLabel = {0: "0%", 1: "90%", 2: "99%", 3: "99.9%", 4: "99.99%"};
    charts.spectrum = new uPlot({
      ...chartSize(el), title: "percentile spectrum since the page opened (HdrHistogram style)",
      scales: {x: {time: false, range: [0, 4.3]}, y: {distr: 3}},
      series: [{label: "percentile", value: (u, v) => (v === null ? "–" : `${(100 * (1 - 10 ** -v)).toFixed(3)}%`)},
        {label: "System 1", stroke: c1, width: 2, value: (u, v) => fmt(v)},
        {label: "System 2", stroke: c2, width: 2, value: (u, v) => fmt(v)}],
      axes: [{...a, label: "percentile (log 1/(1−q))", splits: () => qTicks, values: (u, vals) => vals.map((v) => qLabel[v] ?? "")},
        msAxis("latency")],
    }, [[], [], []], el);

    el = $("chart-rate");
    charts.rate = new uPlot({
      ...chartSize(el), title: "updates per second arriving at this browser",
      series: [{},
        {label: "S1 updates/s", stroke: c1, width: 2, value: (u, v) => int(v)},
        {label: "S2 updates/s", stroke: c2, width: 2, value: (u, v) => int(v)},
        {label: "S1 agents' delivered/s", stroke: c1, width: 1, dash: [2, 3], value: (u, v) => int(v)},
        {label: "S2 agents' delivered/s", stroke: c2, width: 1, dash: [2, 3], value: (u, v) => int(v)}],
      axes: [timeAxis, {...a, label: "per second", size: 70}],
    }, [[], [], [], [], []], el);

    for (const [name, c] of [["system1", c1], ["system2", c2]]) {
      el = $(`chart-res-${name}`);
      charts[`res-${name}`] = makeResourceChart(el, name, c);
    }
  }

  function makeResourceChart(el, name, c) {
    const a = axisStyle();
    const series = [{},
      {label: "max", stroke: c, width: 1, alpha: 0.6},
      {label: "median", stroke: c, width: 2},
      {label: "min", stroke: c, width: 1, alpha: 0.6}];
    const palette = [css("--sel1"), css("--sel2"), css("--sel3"), css("--sel4")];
    resources.selected.forEach((id, i) => series.push({label: id, stroke: palette[i % palette.length], width: 1.5}));
    return new uPlot({
      ...chartSize(el), title: `${name === "system1" ? "System 1" : "System 2"}: ${METRICS[resources.metric]} across servers (band: min–max)`,
      series,
      bands: [{series: [1, 3], fill: c + "33"}],
      axes: [{...a, space: 70}, {...a, label: METRICS[resources.metric], size: 60}],
    }, [[], [], [], []].concat(resources.selected.map(() => [])), el);
  }

  function rebuildResourceCharts() {
    for (const name of SYSTEMS) {
      const key = `res-${name}`;
      if (charts[key]) charts[key].destroy();
      charts[key] = makeResourceChart($(`chart-${key}`), name, colour(name === "system1" ? "s1" : "s2"));
    }
    dirtyCharts = true;
  }

  function drawCharts() {
    const x = times.slice();
    const s1 = sys.system1.history, s2 = sys.system2.history;
    const pos = (arr) => arr.map((v) => (v === null || v <= 0 ? null : v)); // log scale: no zeros
    charts.latency.setData([x, pos(s1.p50), pos(s1.p99), pos(s2.p50), pos(s2.p99)]);
    charts.rate.setData([x, s1.rate.slice(), s2.rate.slice(), s1.agentsRate.slice(), s2.agentsRate.slice()]);
    const qx = [], y1 = [], y2 = [];
    for (let i = 0; i <= 86; i++) qx.push(i * 0.05);
    const qs = qx.map((v) => 1 - 10 ** -v);
    const a1 = sys.system1.sinceOpen.quantiles(qs), a2 = sys.system2.sinceOpen.quantiles(qs);
    for (let i = 0; i < qx.length; i++) { y1.push(a1[i] > 0 ? a1[i] : null); y2.push(a2[i] > 0 ? a2[i] : null); }
    charts.spectrum.setData([qx, y1, y2]);
    for (const name of SYSTEMS) {
      const band = resources.band[name];
      if (!band) continue;
      const n = band.min.length;
      const xs = x.slice(-n);
      const data = [xs, band.max.slice(-xs.length), band.med.slice(-xs.length), band.min.slice(-xs.length)];
      for (const id of resources.selected) {
        const line = (resources.lines[name] && resources.lines[name][id]) || [];
        const padded = new Array(Math.max(0, xs.length - line.length)).fill(null).concat(line.slice(-xs.length));
        data.push(padded);
      }
      charts[`res-${name}`].setData(data);
    }
  }

  function frame(t) {
    requestAnimationFrame(frame);
    if (frameStats.last) {
      frameStats.interval.push(t - frameStats.last);
      if (frameStats.interval.length > 600) frameStats.interval.shift();
    }
    frameStats.last = t;
    const now = performance.now();
    let worked = false;
    // The connection line counts down its retry: redraw text while a system waits.
    if (Object.values(sys).some((s) => s.state !== "open")) dirtyText = true;
    if (dirtyText && now - lastText >= TEXT_EVERY_MS) {
      drawText();
      dirtyText = false;
      lastText = now;
      worked = true;
    }
    if (dirtyCharts) {
      drawCharts();
      dirtyCharts = false;
      worked = true;
    }
    if (worked) {
      frameStats.count += 1;
      frameStats.work.push(performance.now() - now);
      if (frameStats.work.length > 600) frameStats.work.shift();
    }
  }

  // ---- controls -----------------------------------------------------------------------------------
  function setUpControls() {
    $("res-metric").addEventListener("change", (e) => { resources.metric = e.target.value; resetResources(); rebuildResourceCharts(); });
    $("res-window").addEventListener("change", (e) => { resources.window = e.target.value; resetResources(); rebuildResourceCharts(); });
    $("res-servers").addEventListener("change", (e) => {
      resources.selected = e.target.value.split(/[\s,]+/).filter(Boolean).slice(0, 4);
      resources.lines = {};
      rebuildResourceCharts();
    });
    // Window choices come from the systems' own aggregates (1 s / 5 s / 10 s by default).
    setInterval(() => {
      const sel = $("res-window");
      const keys = windowKeys(sys.system2).length ? windowKeys(sys.system2) : windowKeys(sys.system1);
      if (keys.length && sel.options.length !== keys.length) {
        sel.innerHTML = keys.map((k) => `<option value="${k}">${Number(k) / 1000} s</option>`).join("");
        resources.window = resources.window && keys.includes(resources.window) ? resources.window : keys[0];
        sel.value = resources.window;
      }
    }, 1000);
    let resize;
    window.addEventListener("resize", () => {
      clearTimeout(resize);
      resize = setTimeout(() => {
        for (const [key, chart] of Object.entries(charts)) {
          const el = $(key.startsWith("res-") ? `chart-${key}` : `chart-${key}`);
          if (el) chart.setSize(chartSize(el));
        }
      }, 150);
    });
    if ("PerformanceObserver" in window && PerformanceObserver.supportedEntryTypes.includes("longtask")) {
      new PerformanceObserver((list) => { frameStats.longTasks += list.getEntries().length; }).observe({type: "longtask"});
    }
    // Colours follow the light/dark preference: redraw the charts when it changes.
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
      for (const c of Object.values(charts)) c.destroy();
      makeCharts();
      dirtyCharts = true;
    });
  }

  async function start() {
    const r = await fetch("/config.json", {cache: "no-store"});
    config = await r.json();
    lab.config = config;
    for (const s of Object.values(sys)) {
      s.url = wsUrl(config[s.name].ws);
      document.querySelector(`#${s.name} .url`).textContent = s.url;
      connect(s);
      poll(s);
    }
    pollAgents();
    setUpControls();
    makeCharts();
    setInterval(roll, 1000);
    requestAnimationFrame(frame);
  }

  for (const s of SYSTEMS) document.querySelector(`#${s} h2`).textContent = NAMES[s];
  start().catch((e) => { lab.errors.push(`start: ${e.message}`); console.error("dashboard could not start:", e); });
})();
