// Ollama Gateway dashboard: polls /status and /admin/stats, drives the admin API. No framework, no build;
// the charts (charts.js) use the vendored uPlot.
// Every text from a backend goes through textContent (never innerHTML): model names are not trusted.
"use strict";

const POLL_MS = 3000;
const API = { status: "../status", stats: "../admin/stats", pull: "../admin/models/pull", models: "../admin/models",
              warm: "../admin/models/warm" };
const livePulls = new Map(); // "backend/model" -> latest progress event streamed to this page

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(tbody, rows, columns, emptyText) {
  tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: columns }, emptyText))]));
}

const fmt = {
  ms: (s) => (s === null || s === undefined ? "–" : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`),
  int: (n) => (n === null || n === undefined ? "–" : Math.round(n).toLocaleString()),
  pct: (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`),
  usd: (x) => (x ? `$${x.toFixed(x < 1 ? 4 : 2)}` : "$0"),
  rate: (x) => (x === null || x === undefined ? "–" : x.toFixed(1)),
  bytes: (n) => {
    if (!n) return "–";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  },
  until: (iso) => {
    const t = Date.parse(iso || "");
    if (Number.isNaN(t)) return "–";
    const s = Math.round((t - Date.now()) / 1000);
    if (s <= 0) return "expiring";
    if (s > 86400 * 365) return "never";
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return h ? `in ${h}h ${m}m` : m ? `in ${m}m ${r}s` : `in ${r}s`;
  },
};

async function getJSON(url) {
  const resp = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) throw new Error(body?.error?.message || `${url}: HTTP ${resp.status}`);
  return body;
}

async function send(method, url, payload) {
  const resp = await fetch(url, { method, credentials: "same-origin", headers: { "Content-Type": "application/json" },
                                  body: JSON.stringify(payload) });
  if (!resp.ok) {
    const body = await resp.json().catch(() => null);
    throw new Error(body?.error?.message || `HTTP ${resp.status}`);
  }
  return resp;
}

function showError(message) {
  const banner = document.getElementById("banner");
  banner.textContent = message || "";
  banner.hidden = !message;
}

// -- rendering ---------------------------------------------------------------------------------

function renderReadiness(status) {
  const pill = document.getElementById("readiness");
  const warming = status.warming || [];
  if (warming.length) {
    pill.className = "pill pill-warn";
    pill.textContent = `warming up (${warming.length})`;
    pill.title = warming.join(", ");
  } else {
    pill.className = status.status === "ready" ? "pill pill-ok" : "pill pill-bad";
    pill.textContent = status.status === "ready" ? "ready" : "not ready";
    pill.title = (status.reasons || []).join("\n");
  }
  // the not-ready pill says why: every reason /status gives, spelled out under the header
  const reasons = status.status === "ready" ? [] : status.reasons || [];
  const list = document.getElementById("reasons");
  list.replaceChildren(...reasons.map((r) => el("li", {}, r)));
  list.hidden = !reasons.length;
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function circuitPill(state) {
  const cls = { closed: "pill-ok", half_open: "pill-warn", open: "pill-bad" }[state] || "pill-grey";
  return el("span", { class: `pill ${cls}` }, state.replace("_", "-"));
}

function renderBackends(status) {
  const cards = status.backends.map((b) => {
    const health = b.up === true ? "up" : b.up === false ? "down" : "unknown";
    return el("article", { class: "card", "data-backend": b.name },
      el("div", { class: "card-head" },
        el("span", { class: `dot ${health}`, title: health, "data-health": health }),
        el("span", { class: "name" }, b.name),
        el("span", { class: "pill pill-accent type" }, b.type)),
      el("div", { class: "url muted mono" }, b.url),
      el("dl", {},
        el("dt", {}, "Health"), el("dd", {}, health),
        el("dt", {}, "Latency"), el("dd", {}, b.latency_ms === null ? "–" : `${b.latency_ms} ms`),
        el("dt", {}, "Circuit"), el("dd", {}, circuitPill(b.circuit)),
        el("dt", {}, "Version"), el("dd", {}, b.version || "–"),
        el("dt", {}, "In flight"), el("dd", {}, b.in_flight),
        el("dt", {}, "Models"), el("dd", {}, b.type === "ollama" ? `${b.installed.length} installed · ${b.running.length} loaded` : "remote")),
      b.error ? el("div", { class: "error" }, b.error) : null);
  });
  document.getElementById("backends").replaceChildren(...cards);
}

function renderRunning(status) {
  const rows = [];
  for (const b of status.backends) {
    for (const r of b.running) {
      rows.push(el("tr", {},
        el("td", { class: "mono" }, r.model),
        el("td", {}, b.name),
        el("td", { title: r.expires_at || "" }, fmt.until(r.expires_at)),
        el("td", { class: "num" }, fmt.bytes(r.size_vram))));
    }
  }
  fill(document.querySelector("#running tbody"), rows, 4, "No model is loaded right now.");
}

function renderInstalled(status) {
  const rows = [];
  for (const b of status.backends) {
    const loaded = new Set(b.running.map((r) => r.model));
    for (const model of b.installed) {
      const ollama = b.type === "ollama";
      rows.push(el("tr", { "data-model": model, "data-backend": b.name },
        el("td", { class: "mono" }, model),
        el("td", {}, b.name),
        el("td", {}, loaded.has(model) ? el("span", { class: "pill pill-ok" }, "loaded") : el("span", { class: "muted" }, "on disk")),
        el("td", { class: "actions" }, ollama ? [
          el("button", { class: "btn", title: "Pull again (update)", onclick: () => startPull(b.name, model) }, "Pull"),
          el("button", { class: "btn", title: "Load into memory", onclick: () => warm(b.name, model) }, "Warm"),
          el("button", { class: "btn btn-danger", title: "Delete from disk", onclick: () => remove(b.name, model) }, "Delete"),
        ] : el("span", { class: "muted" }, "remote"))));
    }
  }
  fill(document.querySelector("#installed tbody"), rows, 4, "No models installed.");
  const select = document.getElementById("pull-backend");
  const names = status.backends.filter((b) => b.type === "ollama").map((b) => b.name);
  if (select.options.length !== names.length || names.some((n, i) => select.options[i].value !== n)) {
    const chosen = select.value;
    select.replaceChildren(...names.map((n) => el("option", { value: n, selected: n === chosen }, n)));
  }
}

function renderPulls(status) {
  const byKey = new Map();
  for (const p of status.pulls || []) byKey.set(`${p.backend}/${p.model}`, p);
  for (const [key, p] of livePulls) {
    const known = byKey.get(key);
    if (!known || known.state === "pulling" || p.state !== "pulling") byKey.set(key, p);
  }
  const recent = Date.now() / 1000 - 600; // finished pulls stay listed for ten minutes
  const shown = [...byKey.values()].filter((p) => p.state === "pulling" || !p.finished_at || p.finished_at > recent);
  const items = shown.map((p) => {
    const fillBar = el("span", {});
    fillBar.style.width = `${p.state === "done" ? 100 : p.percent || 0}%`; // CSSOM: allowed by the page's CSP
    const label = p.state === "done" ? "done" : p.state === "failed" ? "failed" : `${p.status}${p.percent !== null && p.percent !== undefined ? ` · ${p.percent}%` : ""}`;
    return el("div", { class: `pull ${p.state}`, "data-pull": `${p.backend}/${p.model}` },
      el("div", { class: "pull-head" },
        el("span", {}, el("strong", { class: "mono" }, p.model), el("span", { class: "muted" }, ` on ${p.backend} · ${p.trigger}`)),
        el("span", { class: "muted" }, label)),
      el("div", { class: "bar" }, fillBar),
      p.error ? el("div", { class: "error" }, p.error) : null);
  });
  document.getElementById("pulls").replaceChildren(...items);
}

function renderStats(stats) {
  const note = document.getElementById("perf-note");
  note.textContent = stats.enabled ? "" : "(metrics are disabled in the config)";
  const models = Object.entries(stats.models || {});
  let requests = 0, errors = 0, cost = 0, tokens = 0;
  for (const [, m] of models) { requests += m.requests; errors += m.errors; cost += m.cost_avoided_usd; tokens += m.completion_tokens; }
  const fallbacks = Object.values(stats.routes || {}).reduce((n, r) => n + r.fallbacks, 0);
  const tile = (label, value) => el("div", { class: "tile" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value));
  document.getElementById("tiles").replaceChildren(
    tile("Requests", fmt.int(requests)),
    tile("Error rate", requests ? fmt.pct(errors / requests) : "–"),
    tile("Fallbacks", fmt.int(fallbacks)),
    tile("Tokens generated", fmt.int(tokens)),
    tile("Cloud cost avoided", fmt.usd(cost)));
  fill(document.querySelector("#perf tbody"), models.map(([name, m]) => el("tr", {},
    el("td", { class: "mono" }, name),
    el("td", { class: "num" }, fmt.int(m.requests)),
    el("td", { class: "num" }, `${fmt.int(m.errors)}${m.error_rate ? ` (${fmt.pct(m.error_rate)})` : ""}`),
    el("td", { class: "num" }, fmt.ms(m.latency_p50_s)),
    el("td", { class: "num" }, fmt.ms(m.latency_p95_s)),
    el("td", { class: "num" }, fmt.ms(m.ttft_mean_s)),
    el("td", { class: "num" }, fmt.rate(m.tokens_per_s_mean)),
    el("td", { class: "num" }, fmt.usd(m.cost_avoided_usd)))), 8, "No requests yet.");
  fill(document.querySelector("#routes tbody"), Object.entries(stats.routes || {}).map(([name, r]) => el("tr", {},
    el("td", {}, name),
    el("td", { class: "num" }, fmt.int(r.in_flight)),
    el("td", { class: "num", title: Object.entries(r.fallbacks_by_reason || {}).map(([k, v]) => `${k}: ${v}`).join(", ") }, fmt.int(r.fallbacks)),
    el("td", { class: "mono" }, Object.entries(r.split_shares || {}).map(([arm, share]) => `${arm} ${fmt.pct(share)}`).join("  ·  ") || "–"))),
    4, "No routed traffic yet.");
}

function shareCell(value) {
  const bar = el("span", {});
  bar.style.width = `${Math.round((value || 0) * 100)}%`; // CSSOM: allowed by the page's CSP
  return el("span", { class: "share" }, value === null || value === undefined ? "–" : fmt.pct(value), el("div", { class: "bar" }, bar));
}

function renderMigration(stats) {
  const views = stats.migration || [];
  const blocks = views.map((view) => {
    const arms = view.arms.map((a) => el("tr", { "data-arm": a.arm },
      el("td", { class: "mono" }, a.arm),
      el("td", { class: "num" }, shareCell(a.weight)),
      el("td", { class: "num", "data-field": "share" }, shareCell(a.share)),
      el("td", { class: "num", "data-field": "requests" }, fmt.int(a.requests)),
      el("td", { class: "num", "data-field": "error_rate" }, fmt.pct(a.error_rate)),
      el("td", { class: "num" }, fmt.ms(a.latency_p50_s)),
      el("td", { class: "num" }, fmt.ms(a.latency_p95_s)),
      el("td", { class: "num" }, fmt.ms(a.ttft_p50_s)),
      el("td", { class: "num" }, fmt.ms(a.ttft_p95_s)),
      el("td", { class: "num" }, fmt.rate(a.tokens_per_s)),
      el("td", { class: "num" }, fmt.usd(a.cost_avoided_usd))));
    const primary = view.arms.reduce((t, a) => ({ requests: t.requests + (a.requests || 0), errors: t.errors + (a.errors || 0),
      prompt: t.prompt + (a.prompt_tokens || 0), completion: t.completion + (a.completion_tokens || 0),
      p50: t.p50 === null ? a.latency_p50_s ?? null : t.p50 }), { requests: 0, errors: 0, prompt: 0, completion: 0, p50: null });
    const shadowRows = (view.shadows || []).map((s) => el("tr", { "data-shadow": s.backend },
      el("td", {}, `shadow on ${s.backend}`),
      el("td", { class: "num" }, fmt.int(s.requests)),
      el("td", { class: "mono" }, Object.entries(s.outcomes || {}).map(([k, v]) => `${k} ${fmt.int(v)}`).join(" · ") || "–"),
      el("td", { class: "num" }, `${fmt.ms(s.duration_mean_s)} mean`),
      el("td", { class: "num" }, fmt.int(s.prompt_tokens)),
      el("td", { class: "num" }, fmt.int(s.completion_tokens))));
    const shadows = view.shadow || shadowRows.length ? el("div", { class: "table-wrap" }, el("table", { "data-testid": "shadows" },
      el("thead", {}, el("tr", {}, el("th", {}, "Primary vs shadow"), el("th", { class: "num" }, "Requests"), el("th", {}, "Outcomes"),
        el("th", { class: "num" }, "Latency"), el("th", { class: "num" }, "Prompt tokens"), el("th", { class: "num" }, "Completion tokens"))),
      el("tbody", {},
        el("tr", {}, el("td", {}, "primary (all arms)"), el("td", { class: "num" }, fmt.int(primary.requests)),
          el("td", { class: "mono" }, `ok ${fmt.int(primary.requests - primary.errors)} · errors ${fmt.int(primary.errors)}`),
          el("td", { class: "num" }, `${fmt.ms(primary.p50)} p50`), el("td", { class: "num" }, fmt.int(primary.prompt)),
          el("td", { class: "num" }, fmt.int(primary.completion))),
        shadowRows.length ? shadowRows : el("tr", {}, el("td", { class: "empty", colspan: 6 }, `No shadow result yet (${view.shadow}).`))))) : null;
    return el("div", { class: "route-view", "data-route": view.route },
      el("div", { class: "route-head" }, el("strong", {}, view.route), el("span", { class: "muted" }, `${fmt.int(view.requests)} requests in the last hour`)),
      el("div", { class: "table-wrap" }, el("table", { "data-testid": "arms" },
        el("thead", {}, el("tr", {}, ...["Arm", "Weight", "Share", "Requests", "Error rate", "Latency p50", "p95", "TTFT p50", "p95",
          "Tokens/s", "Cost avoided"].map((h, i) => el("th", { class: i ? "num" : null }, h)))),
        el("tbody", {}, arms))),
      shadows);
  });
  const box = document.getElementById("migration");
  box.replaceChildren(...(blocks.length ? blocks : [el("div", { class: "table-wrap" }, el("table", {}, el("tbody", {},
    el("tr", {}, el("td", { class: "empty" }, "No split or shadowed route is configured.")))))]));
}

function renderOllama(stats) {
  fill(document.querySelector("#ollama tbody"), (stats.ollama || []).map((o) => el("tr", {},
    el("td", { class: "mono" }, o.model),
    el("td", {}, o.backend),
    el("td", { class: "num" }, fmt.int(o.loads)),
    el("td", { class: "num" }, fmt.ms(o.load_mean_s)),
    el("td", { class: "num" }, fmt.int(o.cold_starts)),
    el("td", { class: "num" }, fmt.rate(o.prompt_eval_tokens_per_s_mean)),
    el("td", { class: "num" }, fmt.rate(o.eval_tokens_per_s_mean)))), 7, "No Ollama timings yet.");
}

function renderCredentials(stats) {
  fill(document.querySelector("#credentials tbody"), Object.entries(stats.credentials || {}).map(([name, c]) => el("tr", { "data-credential": name },
    el("td", {}, name),
    el("td", { class: "num" }, fmt.int(c.requests)),
    el("td", { class: "num" }, fmt.int(c.prompt_tokens)),
    el("td", { class: "num" }, fmt.int(c.completion_tokens)))), 4, "No client credential has been used yet.");
}

// -- actions -----------------------------------------------------------------------------------

async function startPull(backend, model) {
  const key = `${backend}/${model}`;
  livePulls.set(key, { backend, model, trigger: "admin", state: "pulling", status: "starting", percent: null });
  renderPulls(lastStatus || { pulls: [] });
  try {
    const resp = await send("POST", API.pull, { backend, model });
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (!line) continue;
        const event = JSON.parse(line);
        if (event.error) livePulls.set(key, { ...livePulls.get(key), state: "failed", error: event.error.message });
        else livePulls.set(key, event);
        renderPulls(lastStatus || { pulls: [] });
      }
    }
  } catch (err) {
    livePulls.set(key, { ...livePulls.get(key), state: "failed", error: err.message });
  }
  refresh();
}

async function remove(backend, model) {
  if (!window.confirm(`Delete ${model} from ${backend}?`)) return;
  try {
    await send("DELETE", API.models, { backend, model });
    showError("");
  } catch (err) {
    showError(`Delete failed: ${err.message}`);
  }
  refresh();
}

async function warm(backend, model) {
  try {
    await send("POST", API.warm, { backend, model });
    showError("");
  } catch (err) {
    showError(`Warm-up failed: ${err.message}`);
  }
  refresh();
}

// -- polling -----------------------------------------------------------------------------------

let timer = null;
let lastStatus = null;

async function refresh() {
  clearTimeout(timer);
  try {
    const [status, stats] = await Promise.all([getJSON(API.status), getJSON(API.stats)]);
    lastStatus = status;
    renderReadiness(status);
    renderBackends(status);
    renderRunning(status);
    renderInstalled(status);
    renderPulls(status);
    renderStats(stats);
    renderMigration(stats);
    renderOllama(stats);
    renderCredentials(stats);
    renderCharts(stats.series);
    showError("");
  } catch (err) {
    showError(`Cannot reach the gateway: ${err.message}`);
  } finally {
    timer = setTimeout(refresh, POLL_MS);
  }
}

document.getElementById("pull-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const backend = document.getElementById("pull-backend").value;
  const input = document.getElementById("pull-model");
  const model = input.value.trim();
  if (!backend || !model) return;
  input.value = "";
  startPull(backend, model);
});

// keep the expiry countdowns moving between polls
setInterval(() => { if (lastStatus) renderRunning(lastStatus); }, 1000);
refresh();
