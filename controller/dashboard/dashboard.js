// hotplate's dashboard: polls the controller's API and draws one view at a
// time (hash routes). The server decides what each role may do; the page
// only leaves out what the signed-in role cannot use.
"use strict";
const $ = (id) => document.getElementById(id);
const short = (sha) => sha ? sha.slice(0, 12) : "–";
const ROLES = ["viewer", "deployer", "admin"];
let me = null;        // {name, role, csrf} once signed in: the session cookie is what the server trusts
let status = null;    // the last /api/status
let following = null; // {id, stop: AbortController} of the log being streamed

// ---- talking to the API

async function api(method, path, body) {
  const headers = me && me.csrf ? {"X-CSRF-Token": me.csrf} : {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  if (r.status === 401 && path !== "/api/session") { me = null; throw new Error("signed out: sign in with a token"); }
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

const may = (role) => me !== null && ROLES.indexOf(me.role) >= ROLES.indexOf(role);

// ---- small drawing helpers

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}

function fill(tbody, items, draw) {
  tbody.replaceChildren();
  for (const item of items) draw(tbody.insertRow(), item);
}

function cells(row, ...values) {
  for (const v of values) { const td = row.insertCell(); td.append(v === null || v === undefined ? "–" : v); }
}

// What each state word looks like: a colour class and an icon, so that colour is never the only cue.
const LOOKS = {
  Synced: ["ok", "✓"], Healthy: ["ok", "♥"], succeeded: ["ok", "✓"], live: ["ok", "●"], verified: ["ok", "✓"],
  Failed: ["bad", "✗"], Down: ["bad", "✗"], failed: ["bad", "✗"], rolled_back: ["bad", "↶"], errored: ["bad", "!"],
  Missing: ["bad", "?"], Unreadable: ["bad", "?"], "failed its gate": ["bad", "✗"],
  OutOfSync: ["warn", "≠"], Degraded: ["warn", "⚠"], Pinned: ["warn", "‖"], pinned: ["warn", "‖"], Stale: ["warn", "≠"],
  "on trial": ["warn", "◐"],
  Progressing: ["busy", "↻"], progressing: ["busy", "↻"], Retrying: ["busy", "↻"],
};

function badge(word, label) {
  const [kind, icon] = LOOKS[word] || ["none", "·"];
  return el("span", {className: "badge " + kind, textContent: icon + " " + (label || word.replace("_", " "))});
}

function setBadge(id, word) { $(id).replaceWith(Object.assign(badge(word), {id})); }

function ago(seconds) {
  if (!seconds) return "–";
  const s = Math.max(0, Date.now() / 1000 - seconds);
  const text = s < 60 ? Math.round(s) + " s ago" : s < 3600 ? Math.round(s / 60) + " min ago"
    : s < 86400 ? Math.round(s / 3600) + " h ago" : Math.round(s / 86400) + " d ago";
  const at = new Date(seconds * 1000);
  return el("time", {dateTime: at.toISOString(), title: at.toLocaleString(), textContent: text});
}

// Stage colours, by name (one hue each; unknown stages grey).
const STAGE_COLOURS = {recall: "#2fa37a", checkout: "#5b8def", plan: "#9b6ef3", build: "#e0803a", release: "#2fa37a", smoke: "#2fa37a",
  roll: "#d8577a", gate: "#c9a227", switch: "#4aa3c8", wave: "#7a8b99"};

function stageBar(stages) {
  const entries = Object.entries(stages || {});
  const total = entries.reduce((n, [, v]) => n + v, 0);
  const words = entries.map(([k, v]) => k + " " + Math.round(v * 1000) + " ms").join(", ");
  const bar = el("div", {className: "stages", role: "img"});
  bar.setAttribute("aria-label", words || "no stages");
  bar.title = words;
  for (const [k, v] of entries) {
    const span = el("span", {title: k + " " + Math.round(v * 1000) + " ms"});
    span.style.width = (total ? 100 * v / total : 0) + "%";
    span.style.background = STAGE_COLOURS[k] || "#9aa3ad";
    bar.append(span);
  }
  return el("div", {}, bar, el("small", {textContent: total ? Math.round(total * 1000) + " ms" : ""}));
}

function legend(stages) {
  return el("p", {className: "legend small"}, ...Object.entries(stages || {}).map(([k, v]) => {
    const i = el("i"); i.style.background = STAGE_COLOURS[k] || "#9aa3ad";
    return el("span", {}, i, k + " " + Math.round(v * 1000) + " ms");
  }));
}

function commitCell(d) {
  const first = (d.message || "").split("\n")[0];
  return el("span", {}, el("code", {className: "sha", textContent: short(d.commit_sha)}), " ",
    el("span", {className: "message", title: d.message || "", textContent: first}),
    d.author ? el("small", {className: "muted", textContent: d.author}) : null);
}

function deployRows(tbody, deploys) {
  fill(tbody, deploys, (row, d) => {
    row.dataset.deploy = d.id;
    const link = el("a", {href: "#/deploys/" + d.id, textContent: "#" + d.id});
    cells(row, link, badge(d.outcome), commitCell(d));
    const by = row.insertCell(); by.className = "wide"; by.append(d.actor || "–", el("br"), el("small", {className: "muted", textContent: d.trigger}));
    cells(row, ago(d.started));
    const st = row.insertCell(); st.className = "wide"; st.append(stageBar(d.stages));
    row.addEventListener("click", (e) => { if (e.target.tagName !== "A") location.hash = "#/deploys/" + d.id; });
  });
}

// ---- confirmation and actions

function confirmAction(title, text, ok, danger) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title; $("confirm-text").textContent = text;
  $("confirm-ok").textContent = ok; $("confirm-ok").className = danger ? "danger" : "";
  dialog.showModal();
  $("confirm-cancel").focus();
  return new Promise((resolve) => {
    const done = (answer) => () => { dialog.close(); resolve(answer); };
    $("confirm-ok").onclick = done(true); $("confirm-cancel").onclick = done(false);
    dialog.oncancel = done(false);
  });
}

async function act(action, body, button) {
  const said = $("said");
  said.replaceChildren(badge("progressing", action + "…"));
  const buttons = document.querySelectorAll(".actions button, #releases button");
  buttons.forEach((b) => { b.disabled = true; });
  if (button) button.setAttribute("aria-busy", "true");
  try {
    const r = await api("POST", "/api/" + action, body || {});
    const outcome = r.outcome || (r.resumed === false ? "nothing was pinned" : r.accepted === false ? "pinned: resume first" : "done");
    said.replaceChildren(badge(r.outcome || "succeeded", action + ": " + outcome),
      r.deploy ? el("a", {href: "#/deploys/" + r.deploy, textContent: " deploy #" + r.deploy}) : "");
  } catch (e) {
    said.replaceChildren(badge("failed", action + " failed"), " " + e.message);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
    if (button) button.removeAttribute("aria-busy");
  }
  refresh();
}

$("sync").addEventListener("click", (e) => act("sync", undefined, e.target));
$("resume").addEventListener("click", (e) => act("resume", undefined, e.target));
$("restart").addEventListener("click", async (e) => {
  if (await confirmAction("Restart the workers?", "Fresh workers take over the live release through its health gate; " +
      "nothing is built and a pin stays.", "Restart")) act("restart", undefined, e.target);
});
$("revert").addEventListener("click", async (e) => {
  const head = status && status.head.commit;
  if (await confirmAction("Revert the head?", "This commits a revert of " + short(head) + " on " +
      (status ? status.head.branch : "the branch") + " and deploys it.", "Revert", true)) act("revert", {commit: head}, e.target);
});

async function rollbackTo(r, button) {
  const warning = r.passed === false ? "Release " + r.release + " never passed its health gate: it failed when it was " +
    "deployed, and may fail again. " : "";
  const ok = await confirmAction(warning ? "Roll back to a release that failed?" : "Roll back?",
    warning + "Live goes to " + r.release + " (commit " + short(r.commit) + ") with no build, and stays pinned there " +
    "until you resume.", warning ? "Roll back anyway" : "Roll back", true);
  if (ok) act("rollback", {to: r.release}, button);
}

// ---- views

function drawStatus(s) {
  $("app").textContent = s.fleet ? "· " + s.fleet.host + " (" + s.role + ")" : "";
  setBadge("state", s.state);
  $("ready").textContent = s.ready && s.ready.message ? s.ready.message : "";
  $("pinned").textContent = s.pinned ? "‖ pinned to " + s.pinned + " by a rollback: auto-sync waits for Resume" : "";
  setBadge("health", s.health.state);
  $("why").textContent = s.health.why.join("; ");
  $("live").replaceChildren(el("code", {textContent: s.live.release || "–"}), " commit ",
    el("code", {textContent: short(s.live.commit)}));
  $("trial").replaceChildren(s.live.release && !s.live.verified && s.progressing ?
    badge("on trial", "on trial: not yet through its gate") : s.live.verified ? badge("verified") : "");
  $("head").replaceChildren(s.head.branch + " @ ", el("code", {textContent: short(s.head.commit)}),
    s.head.note ? " (" + s.head.note + ")" : "");
  $("progressing").replaceChildren(s.progressing ? el("a", {href: "#/deploys/" + s.progressing.deploy,
    textContent: "deploy #" + s.progressing.deploy + " of " + short(s.progressing.commit) + " running"}) : "");
  $("failure").hidden = !s.failure;
  if (s.failure) {
    $("failure-title").replaceChildren(s.failure.deploy !== null ? el("a", {href: "#/deploys/" + s.failure.deploy,
      textContent: "deploy #" + s.failure.deploy}) : "", " " + s.failure.reason);
    $("failure-detail").textContent = s.failure.detail || "";
  }
  fill($("workers").tBodies[0], s.workers, (row, w) => {
    cells(row, w.pid, w.release, w.requests, w.errors_5xx, w.crashes, w.timeouts, w.websockets);
    row.cells[4].className = row.cells[5].className = "wide";
  });
  drawFleet(s.fleet);
}

async function drawPrivateOverview() {
  const [deploys, releases] = await Promise.all([api("GET", "/api/deploys?limit=5"), api("GET", "/api/releases")]);
  deployRows($("recent").tBodies[0], deploys);
  fill($("releases").tBodies[0], releases, (row, r) => {
    const trial = r.live && status && status.progressing && !status.live.verified;
    const state = trial ? badge("on trial", "live, on trial") : r.live ? badge(r.pinned ? "pinned" : "live", r.pinned ? "live (pinned)" : "live")
      : r.passed === false ? badge("failed its gate") : r.passed ? badge("verified") : badge("unknown");
    cells(row, el("code", {textContent: r.release}), el("code", {textContent: short(r.commit)}), r.message || "",
      ago(r.built_at), state);
    row.cells[2].className = row.cells[3].className = "wide";
    const td = row.insertCell();
    if (r.live || !may("deployer")) return;
    const b = el("button", {className: r.passed === false ? "outline secondary small" : "outline small",
      textContent: r.passed === false ? "Roll back anyway…" : "Roll back…"});
    b.dataset.release = r.release;
    b.addEventListener("click", () => rollbackTo(r, b));
    td.append(b);
  });
  const running = status && status.progressing;
  $("running").hidden = !running;
  if (running) follow(running.deploy, $("running-log"));
}

async function drawDeploys() {
  deployRows($("deploys").tBodies[0], await api("GET", "/api/deploys?limit=50"));
}

async function drawDeploy(id) {
  const d = await api("GET", "/api/deploys/" + id);
  $("logtitle").replaceChildren("Deploy #" + id + " ", badge(d.outcome));
  $("deploy-facts").replaceChildren(d.trigger + " by " + (d.actor || "hotplate") + ", ", ago(d.started), " · commit ",
    el("code", {textContent: short(d.commit_sha)}), " " + ((d.message || "").split("\n")[0]),
    d.author ? " (" + d.author + ")" : "", d.release ? el("span", {}, " → release ", el("code", {textContent: d.release})) : "",
    d.reason ? el("span", {className: "warn-text", textContent: " · " + d.reason + (d.detail ? ": " + d.detail : "")}) : "");
  $("deploy-stages").replaceChildren(stageBar(d.stages), legend(d.stages));
  $("modules").replaceChildren(...d.modules.map((m) => el("p", {},
    el("strong", {textContent: m.name}), " (" + m.source + "): ",
    badge(m.ok ? "succeeded" : "failed", m.ok ? (m.cached ? "cached" : "compiled") : "FAILED"),
    m.diagnostics ? el("pre", {className: "diagnostics", textContent: m.diagnostics}) : null)));
  if (d.outcome === "progressing") follow(id, $("log"));
  else if ((!following || following.id !== id || following.done) && $("log").textContent !== (d.log || "(no log)")) {
    $("log").textContent = d.log || "(no log)";
  }
}

// Streams a running deploy's log into `pre`, keeping its end in view (unless the reader scrolled up).
async function follow(id, pre) {
  if (following && following.id === id && following.pre === pre) return;
  if (following) following.stop.abort();
  const stop = new AbortController();
  following = {id, pre, stop};
  pre.textContent = "";
  try {
    const r = await fetch("/api/deploys/" + id + "/follow", {signal: stop.signal});
    const reader = r.body.getReader(); const text = new TextDecoder();
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      const atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
      pre.textContent += text.decode(value, {stream: true});
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }
  } catch (e) { if (e.name !== "AbortError") pre.textContent += "\n(the log stream broke: " + e.message + ")"; }
  if (following && following.stop === stop) following = {id, pre, stop, done: true};
}

async function drawDiff() {
  const d = await api("GET", "/api/diff");
  if (d.error) { $("diff-summary").replaceChildren(badge("failed", "cannot compare"), " " + d.error); return; }
  const changing = d.modules.filter((m) => m.change !== "unchanged").length + d.routes_added.length + d.routes_removed.length;
  $("diff-summary").replaceChildren(changing ? badge("OutOfSync", "head differs") : badge("Synced", "nothing to deploy"),
    " head ", el("code", {textContent: short(d.head)}), " against live ", el("code", {textContent: d.live || "–"}));
  const looks = {unchanged: "Synced", cached: "verified", rebuild: "OutOfSync", removed: "Failed"};
  fill($("diff").tBodies[0], d.modules, (row, m) => cells(row, m.name, m.source || "–", badge(looks[m.change] || m.change, m.change)));
  const list = (title, items, sign) => items.length ? el("div", {}, el("h2", {textContent: title}),
    el("ul", {}, ...items.map((r) => el("li", {}, el("code", {textContent: sign + " " + r}))))) : null;
  $("diff-routes").replaceChildren(...[list("Routes added", d.routes_added, "+"), list("Routes removed", d.routes_removed, "−")]
    .filter(Boolean));
}

const charts = {};  // route -> {plot, times, rates, last}

async function drawModules() {
  const modules = await api("GET", "/api/modules");
  const now = Date.now() / 1000;
  $("module-list").replaceChildren(...(modules.length ? modules.map((m) => {
    const build = m.build ? el("span", {}, "last built in ", el("a", {href: "#/deploys/" + m.build.deploy,
      textContent: "deploy #" + m.build.deploy}), " ", badge(m.build.ok ? "succeeded" : "failed",
      m.build.ok ? (m.build.cached ? "cached" : "compiled") : "build failed")) : "no build recorded";
    const table = el("table", {}, el("thead", {}, el("tr", {}, ...["route", "handler", "requests", "5xx", "p99", "req/s"]
      .map((h, i) => el("th", {scope: "col", textContent: h, className: i === 1 ? "wide" : ""})))), el("tbody"));
    for (const r of m.routes) {
      const row = table.tBodies[0].insertRow();
      cells(row, el("code", {textContent: r.method + " " + r.path}), r.handler, r.requests, r.errors_5xx,
        r.p99_ms === null ? "–" : "≤ " + r.p99_ms + " ms");
      row.cells[1].className = "wide";
      const cell = row.insertCell(); cell.className = "chart";
      cell.append(rateChart(m.name + " " + r.method + " " + r.path, r.requests, now));
    }
    return el("article", {className: "module"},
      el("header", {}, el("strong", {textContent: m.name}), " ", el("code", {textContent: m.source}), " ",
        badge(m.workers_ok === m.workers && m.workers ? "Healthy" : "Degraded",
          "loaded in " + m.workers_ok + " of " + m.workers + " workers")),
      el("p", {}, build, " · object ", el("code", {textContent: m.object}), " · crashes " + m.crashes +
        " · timeouts " + m.timeouts),
      m.build && m.build.diagnostics ? el("pre", {className: "diagnostics", textContent: m.build.diagnostics}) : null,
      el("div", {className: "overflow-auto"}, table));
  }) : [el("p", {className: "muted", textContent: "no release is live: push a commit"})]));
}

// A route's requests per second since the page opened, sampled at each poll:
// one uPlot per route, kept across redraws and given the new samples.
function rateChart(key, requests, now) {
  let c = charts[key];
  if (!c) c = charts[key] = {times: [], rates: [], last: null, box: el("div", {role: "img"}), plot: null,
    label: el("small", {className: "muted"})};
  if (c.last) {
    const dt = now - c.last[0];
    if (dt > 0) { c.times.push(now); c.rates.push(Math.max(0, (requests - c.last[1]) / dt)); }
    if (c.times.length > 120) { c.times.shift(); c.rates.shift(); }
  }
  c.last = [now, requests];
  const rate = c.rates.length ? c.rates[c.rates.length - 1] : 0;
  c.label.textContent = c.rates.length ? rate.toFixed(1) + "/s" : "sampling…";
  c.box.setAttribute("aria-label", "requests per second since this page opened: now " + rate.toFixed(1));
  if (window.uPlot && c.times.length > 1) {
    if (!c.plot) {
      c.plot = new uPlot({width: 140, height: 36, padding: [4, 2, 4, 2], legend: {show: false}, cursor: {show: false},
        scales: {x: {time: false}, y: {range: (u, min, max) => [0, Math.max(1, max * 1.1)]}},
        axes: [{show: false}, {show: false}], series: [{}, {stroke: "#2f6fd0", width: 1.5, fill: "rgba(47,111,208,.15)"}]},
        [c.times, c.rates], c.box);
    } else c.plot.setData([c.times, c.rates]);
  }
  return el("div", {}, c.box, c.label);
}

function drawFleet(f) {
  if (!f) {
    $("fleet-summary").replaceChildren("This host is not in a fleet. Start each host with ",
      el("code", {textContent: "hotplate up --fleet ETCD_URL --host NAME"}), " to roll out in waves.");
    $("rollout").replaceChildren(); fill($("hosts").tBodies[0], [], () => {});
    return;
  }
  $("fleet-summary").replaceChildren(f.connected ? badge("Synced", "connected") : badge("Failed", "cut off from etcd"),
    " etcd ", el("code", {textContent: f.etcd}), " · this host ", el("strong", {textContent: f.host}),
    f.error ? el("span", {className: "warn-text", textContent: " · " + f.error}) : "");
  const r = f.rollout;
  $("rollout").replaceChildren(...(r ? [el("h2", {}, "Rollout of ", el("code", {textContent: r.release}), " ", badge(
    {Done: "Synced", RolledBack: "rolled_back"}[r.state] || "Progressing", r.state)),
    el("p", {className: "muted", textContent: "led by " + (r.leader || "–") + " · wave " + (Math.min(r.wave + 1, r.waves.length)) +
      " of " + r.waves.length + (r.previous ? " · from " + r.previous : "") + (r.reason ? " · " + r.reason : "")}),
    el("div", {className: "progress-waves", role: "list", ariaLabel: "waves"}, ...r.waves.map((hosts, i) => {
      const w = el("span", {role: "listitem", textContent: "wave " + (i + 1) + ": " + hosts.join(", ")});
      const failed = r.state === "RolledBack" && i === r.wave;
      w.className = "badge " + (failed ? "bad" : i < r.wave || r.state === "Done" ? "ok" : i === r.wave ? "busy" : "none");
      if (failed) w.textContent += " ✗";
      return w;
    }))] : [el("p", {className: "muted", textContent: "no rollout recorded yet"})]));
  fill($("hosts").tBodies[0], f.hosts, (row, h) => {
    cells(row, el("strong", {textContent: h.host}), badge(h.state), h.role, el("code", {textContent: h.release || "–"}),
      el("code", {textContent: h.desired || "–"}), h.health ? badge(h.health) : "–");
    row.cells[4].className = "wide";
  });
}

// ---- routing and polling

function view() {
  const [name, id] = location.hash.replace(/^#\/?/, "").split("/");
  if (name === "deploys" && id) return {name: "deploy", id: Number(id)};
  return {name: ["deploys", "diff", "modules", "fleet"].includes(name) ? name : "overview"};
}

function show() {
  const v = view();
  for (const s of document.querySelectorAll("[data-view]")) s.hidden = s.dataset.view !== v.name;
  for (const a of document.querySelectorAll("#views a")) {
    const target = a.getAttribute("href").replace(/^#\/?/, "") || "overview";
    if (target === v.name || (target === "deploys" && v.name === "deploy")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  return v;
}

let drawing = false;
async function refresh() {
  if (drawing) return;
  drawing = true;
  const v = show();
  try {
    status = await api("GET", "/api/status");
    drawStatus(status);
    document.body.classList.toggle("can-deploy", may("deployer"));
    for (const b of document.querySelectorAll(".deployer")) b.hidden = !may("deployer");
    if (me) {
      $("auth").textContent = "signed in as " + me.name + " (" + me.role + ")";
      if (v.name === "overview") await drawPrivateOverview();
      else if (v.name === "deploys") await drawDeploys();
      else if (v.name === "deploy") await drawDeploy(v.id);
      else if (v.name === "modules") await drawModules();
      else if (v.name === "diff" && !$("diff").dataset.drawn) { await drawDiff(); $("diff").dataset.drawn = "1"; }
    } else $("auth").textContent = "read-only: sign in with a token for history and actions";
  } catch (e) { $("auth").textContent = e.message; }
  finally { drawing = false; }
  $("signin").hidden = !!me; $("signout").hidden = !me;
}

window.addEventListener("hashchange", () => { $("diff").dataset.drawn = ""; refresh(); });
$("diff-refresh").addEventListener("click", () => { $("diff").dataset.drawn = ""; refresh(); });
$("signin").addEventListener("submit", async (e) => {
  e.preventDefault();
  try { me = await api("POST", "/api/session", {token: $("token").value.trim()}); }
  catch (err) { $("auth").textContent = err.message; return; }
  $("token").value = "";
  refresh();
});
$("signout").addEventListener("click", async () => { await api("DELETE", "/api/session"); me = null; refresh(); });
api("GET", "/api/session").then((who) => { me = who; }, () => { me = null; }).finally(refresh);
setInterval(refresh, 1000);
