// The semcache dashboard: reads GET /v1/dashboard/data and draws it with Chart.js.
// The API key (when the server has keys) comes from ?key= or the sign-in form, is kept in
// sessionStorage, and is sent only as an Authorization: Bearer header to this server.
"use strict";

const KEY_STORE = "semcache-dashboard-key";
const REFRESH_MS = 15000;
const COLORS = {
  "HIT-EXACT": "#2f6fde", "HIT-SEMANTIC": "#19a974", "MISS": "#9aa3b5", "REFRESH": "#7b61c4",
  "BYPASS": "#c7ccd6", "REJECTED-RATE": "#d48a1a", "REJECTED-BUDGET": "#c93c3c",
};
const OTHER_COLORS = ["#e05d8a", "#8a5a2b", "#3aa6b9", "#555d6e", "#b3b037"];
const charts = {};
let timer = null;

const $ = (id) => document.getElementById(id);

function storedKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

function takeKeyFromUrl() {
  const url = new URL(window.location.href);
  const key = url.searchParams.get("key");
  if (key) {
    sessionStorage.setItem(KEY_STORE, key);
    url.searchParams.delete("key");
    // Keep the key out of the address bar and the history.
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  for (const name of ["tenant", "range"]) {
    const value = url.searchParams.get(name);
    if (value !== null) {
      const select = $(name);
      if (name === "tenant" && ![...select.options].some((o) => o.value === value)) {
        select.add(new Option(value, value));
      }
      select.value = value;
    }
  }
}

function usd(value) {
  if (value === null || value === undefined) return "–";
  const digits = Math.abs(value) >= 1 ? 2 : Math.abs(value) >= 0.01 ? 4 : 6;
  return "$" + Number(value).toFixed(digits);
}

function percent(value) {
  return value === null || value === undefined ? "–" : (value * 100).toFixed(1) + "%";
}

function when(ts) {
  return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

function label(ts, bucket) {
  const iso = new Date(ts * 1000).toISOString();
  return bucket >= 86400 ? iso.slice(0, 10) : iso.slice(5, 16).replace("T", " ");
}

function query() {
  const params = new URLSearchParams();
  const range = $("range").value;
  if (range === "custom") {
    if ($("since").value) params.set("since", new Date($("since").value).toISOString());
    if ($("until").value) params.set("until", new Date($("until").value).toISOString());
  } else {
    const now = Date.now() / 1000;
    params.set("since", String(now - Number(range)));
    params.set("until", String(now + 1));
  }
  if ($("tenant").value) params.set("tenant", $("tenant").value);
  return params;
}

async function load() {
  const headers = {};
  const key = storedKey();
  if (key) headers.Authorization = "Bearer " + key;
  let response;
  try {
    response = await fetch("/v1/dashboard/data?" + query().toString(), { headers });
  } catch (err) {
    $("status").textContent = "cannot reach semcache: " + err;
    return;
  }
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    showLogin(key ? (body.error && body.error.message) || "unknown API key" : "");
    return;
  }
  if (!response.ok) {
    $("status").textContent = (body.error && body.error.message) || response.statusText;
    return;
  }
  $("login").hidden = true;
  $("board").hidden = false;
  $("signout").hidden = !key;
  render(body);
}

function showLogin(message) {
  $("board").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  stopTimer();
}

function tenants(data) {
  const select = $("tenant");
  const current = select.value;
  if (!data.admin) {
    select.innerHTML = "";
    select.add(new Option(data.tenant, data.tenant));
    select.disabled = true;
    return;
  }
  select.disabled = false;
  const names = new Set(data.tenants);
  if (current) names.add(current);
  select.innerHTML = "";
  select.add(new Option("all tenants", ""));
  for (const name of [...names].sort()) select.add(new Option(name, name));
  select.value = current;
}

function render(data) {
  tenants(data);
  const t = data.total;
  $("kpi-requests").textContent = t.requests;
  $("kpi-hit-rate").textContent = percent(t.hit_rate);
  $("kpi-cost").textContent = usd(t.cost_usd);
  $("kpi-saved").textContent = usd(t.saved_usd);
  $("kpi-rate-limited").textContent = t.rejected_rate_limit;
  $("kpi-budget").textContent = t.rejected_budget;
  $("kpi-errors").textContent = t.errors;
  $("kpi-wrong-hits").textContent = data.wrong_hits_total;
  const scope = data.tenant === null ? "all tenants" : "tenant " + data.tenant;
  $("status").textContent =
    `${scope}, ${when(data.range.since)} to ${when(data.range.until)}, ` +
    `${data.range.bucket_s}-second buckets; updated ${when(data.range.now)}`;

  const line = data.timeline;
  const labels = line.starts.map((s) => label(s, data.range.bucket_s));
  draw("chart-hit-rate", "line", labels, [
    series("exact", line.hit_rate_exact.map(pct), COLORS["HIT-EXACT"]),
    series("semantic", line.hit_rate_semantic.map(pct), COLORS["HIT-SEMANTIC"]),
  ], { y: { min: 0, max: 100, ticks: { callback: (v) => v + "%" } } });

  const statuses = Object.keys(line.by_status).filter(
    (s) => !s.startsWith("REJECTED-") && !s.startsWith("ERROR-"));
  draw("chart-requests", "bar", labels,
    statuses.map((s, i) => series(s, line.by_status[s], color(s, i))),
    { x: { stacked: true }, y: { stacked: true, beginAtZero: true } });

  draw("chart-spend", "line", labels, [
    series("spent", line.cost_usd, "#c93c3c"),
    series("saved", line.saved_usd, "#19a974"),
  ], { y: { beginAtZero: true, ticks: { callback: usd } } });

  const refused = Object.keys(line.by_status).filter(
    (s) => s.startsWith("REJECTED-") || s.startsWith("ERROR-"));
  draw("chart-rejections", "bar", labels,
    refused.map((s, i) => series(s, line.by_status[s], color(s, i))),
    { x: { stacked: true }, y: { stacked: true, beginAtZero: true } });

  draw("chart-latency", "line", labels, [
    series("miss latency", line.miss_latency_ms, "#7b61c4"),
  ], { y: { beginAtZero: true } });

  const models = data.top.model;
  draw("chart-models", "bar", models.map((m) => m.name), [
    series("spent", models.map((m) => m.cost_usd), "#c93c3c"),
    series("saved", models.map((m) => m.saved_usd), "#19a974"),
  ], { x: { beginAtZero: true, ticks: { callback: usd } } }, "y");

  for (const field of ["tenant", "user", "feature", "model"]) {
    table("top-" + field, [field, "requests", "spent", "saved", "tokens"],
      data.top[field].map((g) => [g.name || "(none)", num(g.requests), num(usd(g.cost_usd)),
        num(usd(g.saved_usd)), num(g.tokens)]));
  }
  table("budgets", ["scope", "tenant", "period", "spent", "soft", "hard", "used"],
    data.budgets.map((b) => [`${b.scope} ${b.name}`, b.tenant, b.period, num(usd(b.spent_usd)),
      num(usd(b.soft_usd)), num(usd(b.hard_usd)), usedBar(b.used)]));
  table("upstream", ["provider", "model", "status", "calls", "mean", "p95"],
    data.upstream.map((u) => [u.provider, u.model, u.status, num(u.count), num(ms(u.mean_ms)),
      num(ms(u.p95_ms))]));
  table("anomalies", ["day", "by", "name", "spent", "requests"],
    data.anomalies.map((a) => [a.day, a.by, a.name || "(none)", num(usd(a.cost_usd)),
      num(a.requests)]));
  table("wrong-hits", ["time", "tenant", "entry", "similarity", "model"],
    data.wrong_hits.map((w) => [when(w.ts), w.tenant, w.entry_id, num(fixed(w.similarity)),
      w.model]));
  table("misses", ["time", "tenant", "route", "model", "status", "reason", "similarity",
    "latency"],
    data.recent_misses.map((m) => [when(m.ts), m.tenant, m.route, m.model, m.cache,
      reason(m), num(fixed(m.similarity)),
      num(ms(m.latency_ms))]));
  document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
}

function reason(m) {
  // The lookup's miss reason (with the verifier's score when it judged), the bypass cause,
  // or, from a semcache that gives neither, the status.
  if (m.miss_reason) {
    const score = m.verifier_score === null || m.verifier_score === undefined
      ? "" : ` (verifier ${Number(m.verifier_score).toFixed(3)})`;
    return m.miss_reason + score;
  }
  return m.bypass_reason || `${m.cache} (${m.status})`;
}

function pct(v) {
  return v === null ? null : Math.round(v * 1000) / 10;
}

function ms(v) {
  return v === null || v === undefined ? "–" : Number(v).toFixed(1) + " ms";
}

function fixed(v) {
  return v === null || v === undefined ? "–" : Number(v).toFixed(3);
}

function num(v) {
  return { text: String(v), num: true };
}

function color(status, i) {
  return COLORS[status] || OTHER_COLORS[i % OTHER_COLORS.length];
}

function series(name, values, colour) {
  return {
    label: name, data: values, borderColor: colour, backgroundColor: colour,
    spanGaps: true, pointRadius: 2, borderWidth: 2,
  };
}

function draw(id, type, labels, datasets, scales, indexAxis) {
  const category = indexAxis === "y" ? "y" : "x";
  scales[category] = {
    ...(scales[category] || {}),
    ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 8 },
  };
  const chart = charts[id];
  if (chart) {
    chart.data.labels = labels;
    chart.data.datasets = datasets;
    chart.update("none");
    return;
  }
  charts[id] = new Chart($(id), {
    type,
    data: { labels, datasets },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      indexAxis: indexAxis === "y" ? "y" : "x",
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      scales,
    },
  });
}

function usedBar(used) {
  if (used === null || used === undefined) return "–";
  const span = document.createElement("span");
  const bar = document.createElement("span");
  bar.className = "bar";
  const fill = document.createElement("i");
  fill.style.width = Math.min(100, used * 100) + "%";
  if (used >= 1) fill.className = "bad";
  else if (used >= 0.8) fill.className = "warn";
  bar.appendChild(fill);
  span.appendChild(bar);
  span.appendChild(document.createTextNode(percent(used)));
  return span;
}

function table(id, headings, rows) {
  const el = $(id);
  el.innerHTML = "";
  const head = el.createTHead().insertRow();
  for (const h of headings) {
    const th = document.createElement("th");
    th.textContent = h;
    head.appendChild(th);
  }
  const body = el.createTBody();
  if (!rows.length) {
    const cell = body.insertRow().insertCell();
    cell.colSpan = headings.length;
    cell.className = "empty";
    cell.textContent = "nothing in this range";
    return;
  }
  for (const row of rows) {
    const tr = body.insertRow();
    for (const value of row) {
      const td = tr.insertCell();
      if (value instanceof Node) td.appendChild(value);
      else if (value && typeof value === "object") {
        td.textContent = value.text;
        if (value.num) td.className = "num";
      } else td.textContent = value === null || value === undefined ? "" : String(value);
    }
  }
}

function startTimer() {
  stopTimer();
  if ($("auto").checked) timer = setInterval(load, REFRESH_MS);
}

function stopTimer() {
  if (timer) clearInterval(timer);
  timer = null;
}

document.addEventListener("DOMContentLoaded", () => {
  takeKeyFromUrl();
  $("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    load();
    startTimer();
  });
  $("range").addEventListener("change", () => {
    $("filters").classList.toggle("custom", $("range").value === "custom");
    if ($("range").value !== "custom") load();
  });
  $("tenant").addEventListener("change", load);
  $("auto").addEventListener("change", startTimer);
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    showLogin("");
  });
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("key").value.trim());
    $("key").value = "";
    load();
    startTimer();
  });
  load();
  startTimer();
});
