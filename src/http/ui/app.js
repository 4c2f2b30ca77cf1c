// siemsync's SIEM integration page: plain JavaScript over the v1 API, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 2000;
const REQUEST_MS = 15000;
const TOKEN_AGAIN = "Enter the HEC token again: it is only sent to the host it was entered for.";
const session = {
  token: sessionStorage.getItem("siemsync.token"),
  account: sessionStorage.getItem("siemsync.account"),
  role: sessionStorage.getItem("siemsync.role"),
};
let timer = null;
let view = 0; // counts view changes: an answer for an earlier view is dropped
let lastFresh = null; // when the data on screen was last loaded
let trouble = null; // why it cannot be refreshed: {kind: "refused" | "unreachable" | "error", since, message}

// ---- talking to the API ----
async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + session.token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp, text;
  try {
    // A service that accepts connections but never answers counts as unreachable too.
    resp = await fetch(path, { method, headers, cache: "no-store", signal: AbortSignal.timeout(REQUEST_MS),
      body: body === undefined ? undefined : JSON.stringify(body) });
    text = await resp.text();
  } catch (_) {
    return { status: 0, ok: false, unreachable: true,
      data: { error: "siemsync cannot be reached: nothing was changed. Try again in a moment." } };
  }
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: text }; }
  if (!resp.ok && !(data && typeof data.error === "string")) data = { error: "siemsync answered HTTP " + resp.status + "." };
  return { status: resp.status, ok: resp.ok, data };
}

const base = () => "/api/v1/accounts/" + encodeURIComponent(session.account);
const isAdmin = () => session.role === "admin";

// ---- words and times ----
const pad = (n) => String(n).padStart(2, "0");
function utc(date) {
  return date.getUTCFullYear() + "-" + pad(date.getUTCMonth() + 1) + "-" + pad(date.getUTCDate()) + " " +
    pad(date.getUTCHours()) + ":" + pad(date.getUTCMinutes()) + ":" + pad(date.getUTCSeconds()) + " UTC";
}

function relative(date) {
  const secs = Math.round((date.getTime() - Date.now()) / 1000);
  const a = Math.abs(secs);
  if (a < 5) return secs < 0 || a === 0 ? "just now" : "in a few seconds";
  let span;
  if (a < 60) span = a + " s";
  else if (a < 3600) span = Math.round(a / 60) + " min";
  else if (a < 86400) span = Math.round(a / 3600) + " h";
  else span = plural(Math.round(a / 86400), "day");
  return secs < 0 ? span + " ago" : "in " + span;
}

/** "2026-11-25 10:00:00 UTC (12 s ago)": absolute in UTC, relative beside it. */
function when(iso, never) {
  if (!iso) return never || "never";
  const d = iso instanceof Date ? iso : new Date(iso);
  return isNaN(d) ? String(iso) : utc(d) + " (" + relative(d) + ")";
}

function plural(n, word, words) {
  return Number(n).toLocaleString("en-US") + " " + (n === 1 ? word : words || word + "s");
}

function host(uri) {
  try { return new URL(uri).host; } catch (_) { return uri; }
}

const SOURCE_NAMES = { audit: "Audit log", jobs: "Job monitor" };
const LABELS = { name: "The name", hec_token: "The HEC token", hec_uri: "The HEC URI", sources: "The data sources",
  enabled: "The Enable toggle", index: "The index", ca_pem: "The CA certificate", indexer_ack: "Indexer acknowledgement",
  tls_verify: "Certificate checking", from: "“From”", to: "“To”" };
const FIELD_NAMES = { name: "Name", hec_token: "HEC token", hec_uri: "HEC URI", sources: "Data sources",
  enabled: "Enable configuration", index: "Index", ca_pem: "CA certificate", indexer_ack: "Indexer acknowledgement" };

/** The API names the field first, in backticks: say it in the page's words instead. */
function plain(message) {
  const m = /^`([a-z_]+)` (.*)$/s.exec(message || "");
  if (!m) return { field: null, text: message };
  const said = m[2].replace(/`([a-z_]+)`/g, (all, f) => (LABELS[f] || all).replace(/^The /, "the "));
  return { field: m[1], text: (LABELS[m[1]] || m[1]) + " " + said };
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

// ---- views, freshness and the banner ----
const SECTIONS = ["signin", "overview", "missing", "disabled", "list", "editor"];
function show(section) {
  for (const id of SECTIONS) $(id).hidden = id !== section;
}

let noticeTimer = null;
/** A confirmation at the top, gone after a while (it is also announced). */
function notice(text) {
  $("notice").textContent = text || "";
  clearTimeout(noticeTimer);
  if (text) noticeTimer = setTimeout(() => { $("notice").textContent = ""; }, 15000);
}

/** Runs `fn` every few seconds, never two at once (a slow answer delays the next). */
function startTimer(fn) {
  stopTimer();
  let busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    try {
      await fn();
      drawTrouble();
    } finally {
      busy = false;
    }
  };
  timer = setInterval(tick, REFRESH_MS);
}

function stopTimer() {
  clearInterval(timer);
  timer = null;
}

function fresh() {
  trouble = null;
  lastFresh = new Date();
  drawTrouble();
}

/** A refresh failed: what is on screen is getting old, and the banner says so. */
function stale(r) {
  const kind = r.unreachable ? "unreachable" : r.status === 401 ? "refused" : "error";
  if (!trouble || trouble.kind !== kind) trouble = { kind, since: new Date() };
  trouble.message = r.data.error;
  for (const li of cards.values()) render(li.integration, li.status);
  drawTrouble();
}

function drawTrouble() {
  const t = lastFresh ? "Updated " + when(lastFresh) + "; refreshed every few seconds." : "";
  $("fresh").textContent = t;
  $("overview-fresh").textContent = t;
  document.body.classList.toggle("stale", !!trouble);
  if (!trouble) {
    $("banner").hidden = true;
    return;
  }
  const text = trouble.kind === "refused"
    ? "Your access token was refused: it may have been revoked or replaced. Sign in again with a valid token."
    : trouble.kind === "unreachable"
      ? "siemsync cannot be reached since " + utc(trouble.since) + ". The page keeps trying every few seconds."
      : "The page cannot refresh: " + trouble.message;
  // Set only when it changes: the alert is announced on every change.
  if ($("banner-text").textContent !== text) $("banner-text").textContent = text;
  $("banner-age").textContent = lastFresh
    ? "What you see was last updated at " + when(lastFresh) + (trouble.kind === "refused" ? " and is no longer kept up to date." : " and may be out of date.")
    : "Nothing could be loaded.";
  $("banner").className = "banner" + (trouble.kind === "refused" ? " refused" : "");
  $("banner-signin").hidden = trouble.kind !== "refused";
  $("banner").hidden = false;
}

// ---- sign in, and where each role lands ----
async function signIn(event) {
  event.preventDefault();
  $("signin-error").textContent = "";
  const token = $("signin-token").value.trim();
  if (!token) {
    $("signin-error").textContent = "Enter your access token.";
    return;
  }
  session.token = token;
  const who = await api("GET", "/api/v1/whoami");
  if (!who.ok) {
    $("signin-error").textContent = who.status === 401
      ? "That token is not valid: it may have been revoked. Ask your administrator for a new one."
      : who.data.error;
    return;
  }
  if (who.data.role === "ingest") {
    $("signin-error").textContent = "This token may only post events; sign in with an account token.";
    return;
  }
  session.role = who.data.role;
  session.account = who.data.role === "account" ? who.data.account : null;
  sessionStorage.setItem("siemsync.token", session.token);
  sessionStorage.setItem("siemsync.role", session.role);
  if (session.account) sessionStorage.setItem("siemsync.account", session.account);
  $("signin-token").value = "";
  trouble = null;
  lastFresh = null;
  route();
}

function signOut() {
  view++;
  sessionStorage.clear();
  session.token = session.account = session.role = null;
  stopTimer();
  clearCards();
  trouble = null;
  lastFresh = null;
  drawTrouble();
  notice("");
  $("who").hidden = true;
  if (location.hash) history.replaceState(null, "", location.pathname);
  show("signin");
  $("signin-token").focus();
}

/** Administrators land on every account; `#/accounts/<id>` opens one. */
function route() {
  if (!session.token) return signOut();
  $("who").hidden = false;
  if (!isAdmin()) return openAccount(session.account);
  const m = /^#\/accounts\/(.+)$/.exec(location.hash);
  return m ? openAccount(decodeURIComponent(m[1])) : openOverview();
}

function goToAccount(id) {
  location.hash = "#/accounts/" + encodeURIComponent(id);
}

function goToOverview() {
  if (location.hash) location.hash = "";
  else route();
}

async function openAccount(id) {
  stopTimer();
  const mine = ++view;
  clearCards();
  notice("");
  session.account = id;
  sessionStorage.setItem("siemsync.account", id);
  $("who-text").textContent = "Account " + id + (isAdmin() ? " (administrator)" : "");
  $("to-overview").hidden = !isAdmin();
  const account = await api("GET", base());
  if (mine !== view) return;
  if (account.status === 401 && !lastFresh) return signOut();
  if (account.status === 404) return showMissing(id);
  if (!account.ok) {
    stale(account);
    startTimer(() => openAccount(id));
    return;
  }
  fresh();
  if (!account.data.siem_enabled) return showDisabled(id);
  $("list-title").textContent = isAdmin() ? "Integrations of " + id : "Integrations";
  show("list");
  await refresh();
  startTimer(refresh);
}

function showMissing(id) {
  if (!isAdmin()) return showDisabled(id);
  $("missing-text").textContent = "No account named \"" + id + "\" is known to siemsync: it has no integrations, tokens or events, and its SIEM integration was never switched on. Check the name, or pick the account from all accounts.";
  show("missing");
  $("missing-back").focus();
}

function showDisabled(id) {
  $("disabled-text").textContent = isAdmin()
    ? "SIEM integration is off for the account \"" + id + "\". Turn it on to let the account add integrations."
    : "This feature isn't enabled for your account. Please contact our support team to have it activated.";
  $("enable-feature").hidden = !isAdmin();
  show("disabled");
}

async function setFeature(id, on) {
  const r = await api("PUT", "/api/v1/accounts/" + encodeURIComponent(id), { siem_enabled: on });
  notice(r.ok ? "SIEM integration is " + (on ? "on" : "off") + " for " + id + "." : "");
  if (!r.ok) window.alert(r.data.error);
  return r.ok;
}

// ---- the administrator's overview: every integration, and every account ----
async function openOverview() {
  stopTimer();
  view++;
  clearCards();
  session.account = null;
  sessionStorage.removeItem("siemsync.account");
  $("who-text").textContent = "Administrator";
  $("to-overview").hidden = true;
  show("overview");
  await refreshOverview();
  startTimer(refreshOverview);
}

async function refreshOverview() {
  const mine = view;
  const [accounts, drawn] = await Promise.all([api("GET", "/api/v1/accounts"), refreshFleet()]);
  if (mine !== view) return;
  if (!accounts.ok) return stale(accounts);
  if (!drawn) return;
  drawPicker(accounts.data.map((a) => a.account));
  const body = $("accounts").tBodies[0];
  const keep = new Set();
  for (const a of accounts.data) {
    keep.add(a.account);
    let row = body.querySelector('tr[data-account="' + CSS.escape(a.account) + '"]');
    if (!row) row = accountRow(a.account, body);
    const sw = row.querySelector("[data-a=feature]");
    sw.setAttribute("aria-checked", String(a.siem_enabled));
    sw.querySelector(".state").textContent = a.siem_enabled ? "On" : "Off";
    row.cells[2].textContent = String(a.integrations);
  }
  for (const row of [...body.rows]) if (!keep.has(row.dataset.account)) row.remove();
  $("accounts-empty").hidden = accounts.data.length > 0;
  $("accounts").hidden = accounts.data.length === 0;
  fresh();
}

// The overview's table is one page of the service's sorted list: thousands of
// integrations never come to the page at once.
const FLEET_STATES = [["needs_action", "needs action", "needs-action"], ["retrying", "retrying", "retrying"],
  ["pending", "pending", "pending"], ["healthy", "healthy", "healthy"], ["disabled", "disabled", "disabled"]];
const fleet = { sort: "state", order: null, page: 1, per_page: 25, state: null, seq: 0, drawn: "" };

/** Loads the page of the overview the table shows (a newer request's answer wins);
 * false when the service did not answer it. */
async function refreshFleet() {
  const mine = view;
  const seq = ++fleet.seq;
  const q = new URLSearchParams({ sort: fleet.sort, page: fleet.page, per_page: fleet.per_page });
  if (fleet.order) q.set("order", fleet.order);
  if (fleet.state) q.set("state", fleet.state);
  const r = await api("GET", "/api/v1/overview?" + q);
  if (mine !== view || seq !== fleet.seq) return true;
  if (!r.ok) {
    stale(r);
    return false;
  }
  if (r.data.pages > 0 && fleet.page > r.data.pages) {
    fleet.page = r.data.pages; // fewer integrations than before: the last page there is
    return refreshFleet();
  }
  drawFleet(r.data);
  return true;
}

function drawFleet(d) {
  fleet.order = d.order;
  const list = $("state-counts");
  for (const [key, words, cls] of FLEET_STATES) {
    let b = list.querySelector('[data-state="' + key + '"]');
    if (!b) {
      b = el("button", null, "badge " + cls);
      b.type = "button";
      b.dataset.state = key;
      b.addEventListener("click", () => setFleet({ state: fleet.state === key ? null : key, page: 1 }));
      const li = el("li");
      li.append(b);
      list.append(li);
    }
    b.textContent = d.counts[key].toLocaleString("en-US") + " " + words;
    b.setAttribute("aria-pressed", String(fleet.state === key));
  }
  for (const th of $("fleet").tHead.rows[0].cells) {
    const key = th.dataset.key;
    if (!key) continue;
    const arrow = th.querySelector(".arrow");
    if (key === d.sort) {
      th.setAttribute("aria-sort", d.order === "asc" ? "ascending" : "descending");
      arrow.textContent = d.order === "asc" ? " ▲" : " ▼";
    } else {
      th.removeAttribute("aria-sort");
      arrow.textContent = "";
    }
  }
  const all = FLEET_STATES.reduce((n, [k]) => n + d.counts[k], 0);
  $("fleet-page").textContent = d.total === 0 ? (fleet.state ? "No integration in this state." : "")
    : "Page " + d.page + " of " + d.pages + " · " + (fleet.state ? d.total.toLocaleString("en-US") + " of " : "") + plural(all, "integration");
  $("fleet-prev").setAttribute("aria-disabled", String(d.page <= 1));
  $("fleet-next").setAttribute("aria-disabled", String(d.page >= d.pages));
  $("fleet-per-page").value = String(d.per_page);
  $("fleet-empty").hidden = all > 0;
  $("fleet-pager").hidden = all === 0;
  $("fleet").hidden = d.total === 0;
  // Rows are redrawn only when they change, so that a refresh never takes the focus away.
  const drawn = JSON.stringify(d.integrations);
  if (drawn === fleet.drawn) return;
  fleet.drawn = drawn;
  $("fleet").tBodies[0].replaceChildren(...d.integrations.map(fleetRow));
}

function fleetRow(r) {
  const row = el("tr");
  row.dataset.account = r.account;
  row.dataset.id = r.id;
  const account = el("th");
  account.scope = "row";
  const open = el("button", r.account, "link");
  open.type = "button";
  open.setAttribute("aria-label", "Open account " + r.account);
  open.addEventListener("click", () => goToAccount(r.account));
  account.append(open);
  const [, words, cls] = FLEET_STATES.find(([k]) => k === r.state);
  const state = el("td");
  state.append(el("span", words, "badge " + cls));
  const last = r.last_sync;
  let latest = "none yet";
  if (last) {
    latest = RESULT_WORDS[last.result] + " " + relative(new Date(last.finished_at));
    if (last.error) latest += ": " + last.error.text;
  }
  row.append(account, el("td", r.name), state,
    el("td", r.backlog == null ? "—" : r.backlog === 0 ? "none" : plural(r.backlog, "event"), "num"),
    el("td", when(r.last_success)), el("td", latest));
  return row;
}

function setFleet(change) {
  Object.assign(fleet, change);
  return refreshFleet();
}

function sortFleet(key) {
  // The same column again turns the order round; another starts with its most alarming end.
  if (fleet.sort === key) setFleet({ order: fleet.order === "asc" ? "desc" : "asc", page: 1 });
  else setFleet({ sort: key, order: null, page: 1 });
}

function accountRow(id, body) {
  const row = body.insertRow();
  row.dataset.account = id;
  const name = el("th");
  name.scope = "row";
  const open = el("button", id, "link");
  open.type = "button";
  open.setAttribute("aria-label", "Open account " + id);
  open.addEventListener("click", () => goToAccount(id));
  name.append(open);
  row.append(name);
  const cell = row.insertCell();
  const sw = el("button", null, "switch-button");
  sw.type = "button";
  sw.dataset.a = "feature";
  sw.setAttribute("role", "switch");
  sw.setAttribute("aria-label", "SIEM integration for " + id);
  sw.append(el("span", null, "track"), el("span", "", "state"));
  sw.addEventListener("click", async () => {
    const on = sw.getAttribute("aria-checked") !== "true";
    const n = Number(row.cells[2].textContent) || 0;
    if (!on && n > 0 && !window.confirm("Turn SIEM integration off for " + id + "? Its " + plural(n, "integration") + " stop delivering until it is turned on again.")) return;
    if (await setFeature(id, on)) await refreshOverview();
  });
  cell.append(sw);
  row.insertCell();
  return row;
}

function drawPicker(ids) {
  const picker = $("account-picker");
  const now = [...picker.options].map((o) => o.value);
  if (now.join("\n") === ids.join("\n")) return;
  const chosen = picker.value;
  picker.replaceChildren(...ids.map((id) => new Option(id, id)));
  if (ids.includes(chosen)) picker.value = chosen;
}

async function addAccount(event) {
  event.preventDefault();
  const id = $("new-account").value.trim();
  const err = $("new-account-error");
  err.textContent = "";
  $("new-account").removeAttribute("aria-invalid");
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(id)) {
    err.textContent = "An account name has 1 to 64 letters, digits, '.', '_' or '-'.";
    $("new-account").setAttribute("aria-invalid", "true");
    $("new-account").focus();
    return;
  }
  if (await setFeature(id, true)) {
    $("new-account").value = "";
    goToAccount(id);
  }
}

// ---- one account's integrations ----
const cards = new Map();

function clearCards() {
  cards.clear();
  $("integrations").replaceChildren();
}

// Cards this page added or deleted after a refresh began: that refresh's answer is
// older than them, so it neither removes nor brings them back.
const deleted = new Set();
let running = null;
/** One load at a time; callers meanwhile share it (one begun for an earlier view does not count). */
function refresh() {
  if (!running || running.view !== view) {
    const p = load().finally(() => { if (running === p) running = null; });
    p.view = view;
    running = p;
  }
  return running;
}

async function load() {
  const started = Date.now();
  const mine = view;
  const list = await api("GET", base() + "/integrations");
  if (mine !== view) return;
  if (!list.ok) return stale(list);
  const statuses = await Promise.all(list.data.map((it) => api("GET", base() + "/integrations/" + it.id + "/status")));
  if (mine !== view) return;
  // An integration deleted meanwhile answers 404: it goes at the next refresh.
  const failed = statuses.find((s) => !s.ok && s.status !== 404);
  if (failed) return stale(failed);
  const seen = new Set();
  list.data.forEach((it, i) => {
    seen.add(it.id);
    if (!deleted.has(it.id)) render(it, statuses[i].ok ? statuses[i].data : null);
  });
  for (const [id, li] of cards) {
    if (!seen.has(id) && !(li.addedAt > started)) { li.remove(); cards.delete(id); }
  }
  $("empty").hidden = cards.size > 0;
  fresh();
}

function field(li, name) { return li.querySelector('[data-f="' + name + '"]'); }

/** The badge: "retrying" (Splunk busy, nothing to do) is not "needs action" (the customer must fix something). */
function display(st) {
  if (!st) return { key: "pending", label: "pending" };
  if (st.state !== "failing") return { key: st.state, label: st.state };
  return st.last_error && st.last_error.kind === "transient"
    ? { key: "retrying", label: "retrying" }
    : { key: "needs-action", label: "needs action" };
}

function newCard(it) {
  const li = $("card").content.firstElementChild.cloneNode(true);
  li.dataset.id = it.id;
  li.querySelectorAll(".actions button[data-a]").forEach((b) => b.addEventListener("click", () => act(b.dataset.a, li)));
  const form = field(li, "replay-form");
  form.addEventListener("submit", (e) => startReplay(e, li));
  form.addEventListener("input", () => schedulePreview(li));
  form.querySelectorAll("[data-preset]").forEach((b) => b.addEventListener("click", () => preset(li, b.dataset.preset)));
  form.addEventListener("keydown", (e) => { if (e.key === "Escape") act("replay-close", li); });
  wireHistory(li);
  cards.set(it.id, li);
  $("integrations").append(li);
  return li;
}

function render(it, st) {
  const li = cards.get(it.id) || newCard(it);
  li.integration = it;
  li.status = st;
  field(li, "name").textContent = it.name;
  const shown = display(st);
  const badge = field(li, "state");
  badge.textContent = shown.label;
  badge.className = "badge " + shown.key;
  badge.setAttribute("aria-label", "State: " + shown.label);
  field(li, "host").textContent = host(it.hec_uri);
  field(li, "sources").textContent = it.sources.map((s) => SOURCE_NAMES[s]).join(", ");
  field(li, "enabled").textContent = it.enabled ? "Yes" : "No";
  if (st) renderStatus(li, st, shown);
  renderProblems(li, st, shown);
  renderWarnings(li, it.warnings || []);
  // Every button says which integration it acts on (screen readers list them out of context).
  const names = { test: "Test connection of", sync: "Sync now", edit: "Edit", dead: "Dead letters of", replay: "Replay events to", delete: "Delete" };
  for (const b of li.querySelectorAll(".actions button[data-a]")) {
    if (names[b.dataset.a]) b.setAttribute("aria-label", names[b.dataset.a] + " " + it.name);
  }
  li.querySelector("[data-a=replay-close]").setAttribute("aria-label", "Close the replay form of " + it.name);
  field(li, "range").setAttribute("aria-label", "Period of the delivery chart of " + it.name);
  field(li, "syncs-wrap").setAttribute("aria-label", "Syncs of " + it.name);
  const start = li.querySelector(".replay button[type=submit]");
  start.setAttribute("aria-label", start.textContent + " to " + it.name);
  const fromFile = it.managed_by === "config file";
  li.querySelector("[data-a=edit]").disabled = fromFile;
  li.querySelector("[data-a=delete]").disabled = fromFile;
}

function renderStatus(li, st, shown) {
  field(li, "delivered").textContent = plural(st.delivered.audit + st.delivered.jobs, "event");
  const b = st.backlog;
  field(li, "backlog").textContent = b.events === 0 ? "none"
    : plural(b.events, "event") + (b.oldest_age_secs != null ? ", the oldest from " + when(new Date(Date.now() - b.oldest_age_secs * 1000)) : "");
  field(li, "last_success").textContent = when(st.last_success);
  field(li, "last_attempt").textContent = when(st.last_attempt);
  field(li, "next_label").textContent = shown.key === "retrying" || shown.key === "needs-action" ? "Next retry" : "Next sync";
  field(li, "next_sync").textContent = st.syncing ? "syncing now" : when(st.next_sync, "—");
  field(li, "retries").textContent = String(st.retries);
  field(li, "retries").parentElement.hidden = st.retries === 0;
  const extra = [];
  if (st.progress) {
    const p = st.progress;
    extra.push("Catching up: " + p.done.toLocaleString("en-US") + " of " + plural(p.total, "event") +
      (p.eta_secs != null ? ", about " + relative(new Date(Date.now() + p.eta_secs * 1000)).replace("in ", "") + " left" : ""));
  }
  if (st.dead_letters) extra.push(plural(st.dead_letters, "event") + " in dead letters");
  const r = st.replay;
  if (r) {
    const what = r.state === "running" ? "Replay running" : "Last replay " + r.state;
    extra.push(what + ": " + r.sent.toLocaleString("en-US") + " of " + plural(r.total, "event") + " sent (" + utc(new Date(r.from)) + " to " + utc(new Date(r.to)) + ")");
  }
  for (const g of st.gaps || []) {
    const why = g.reason === "backlog_quota"
      ? " dropped undelivered because Splunk was unreachable too long and the account's backlog went over its quota"
      : " outlived the retention before delivery";
    extra.push(plural(g.count, g.source === "audit" ? "audit event" : "job event") + why + " (stored " + utc(new Date(g.from)) + " to " + utc(new Date(g.to)) + ")");
  }
  field(li, "extra").textContent = extra.join(" · ");
  if (li.syncAsked) checkSync(li, st);
  historyDue(li, st);
}

/** Each distinct message once per card, including what the card's result already says. */
function renderProblems(li, st, shown) {
  const box = field(li, "problem");
  const messages = [];
  const said = field(li, "result").textContent;
  const add = (m) => {
    if (m && !said.includes(m) && !messages.some((x) => x.includes(m) || m.includes(x))) messages.push(m);
  };
  const err = st && st.state === "failing" ? st.last_error : null;
  if (err) {
    add(err.advice);
    const codes = [err.http_status != null ? "HTTP " + err.http_status : null, err.code != null ? "HEC code " + err.code : null].filter(Boolean);
    add("Splunk said: " + err.text + (codes.length ? " (" + codes.join(", ") + ")" : ""));
  }
  const test = st && st.connection_test;
  // A failed test older than the last success no longer says anything.
  if (test && !test.ok && !(st.last_success && Date.parse(st.last_success) > Date.parse(test.checked_at))) add(test.summary);
  if (st && st.replay && st.replay.state === "failed" && st.replay.error) add("Replay: " + st.replay.error.advice);
  box.hidden = messages.length === 0;
  box.className = "problem" + (shown.key === "retrying" ? " retrying" : "");
  field(li, "error").textContent = shown.key === "retrying"
    ? "Retrying: Splunk is busy or unreachable. siemsync retries by itself; nothing to do."
    : err ? "Needs action:" : "Connection test:";
  field(li, "messages").replaceChildren(...messages.map((m) => el("li", m)));
}

function renderWarnings(li, warnings) {
  const box = field(li, "warnings");
  box.hidden = warnings.length === 0;
  box.replaceChildren(...warnings.map((w) => el("p", "Warning: " + w.message)));
}

// ---- delivery history: a chart of the syncs, and the table that says it in words ----
const RANGES = { "24h": { ms: 86400000, label: "Last 24 hours" }, "7d": { ms: 7 * 86400000, label: "Last 7 days" } };
const RESULT_WORDS = { delivered: "delivered", partial: "partial", failed: "failed", skipped: "nothing to send" };
const TABLE_ROWS = 5;
const SVG_NS = "http://www.w3.org/2000/svg";

function hist(li) {
  if (!li.hist) li.hist = { range: "24h", records: null, key: null, seq: 0, all: false };
  return li.hist;
}

function wireHistory(li) {
  for (const b of li.querySelectorAll("[data-range]")) {
    b.addEventListener("click", () => {
      const h = hist(li);
      if (h.range === b.dataset.range) return;
      h.range = b.dataset.range;
      for (const o of li.querySelectorAll("[data-range]")) o.setAttribute("aria-pressed", String(o === b));
      loadHistory(li);
    });
  }
  li.querySelector("[data-a=all-syncs]").addEventListener("click", () => {
    hist(li).all = !hist(li).all;
    drawTable(li);
  });
  const plot = field(li, "plot");
  plot.addEventListener("keydown", (e) => markKey(li, e));
  plot.addEventListener("focusin", (e) => { const m = e.target.closest(".fail"); if (m) showTip(li, m); });
  plot.addEventListener("focusout", () => hideTip(li));
  plot.addEventListener("pointerover", (e) => { const m = e.target.closest(".fail"); if (m) showTip(li, m); });
  plot.addEventListener("pointerout", (e) => {
    if (e.target.closest(".fail") && !plot.contains(document.activeElement)) hideTip(li);
  });
}

/** The history is loaded again only when a sync ended since it was last loaded. */
function historyDue(li, st) {
  const key = st.last_sync ? st.last_sync.finished_at : "none";
  const h = hist(li);
  if (h.key === key) return;
  h.key = key;
  loadHistory(li);
}

async function loadHistory(li) {
  const h = hist(li);
  const seq = ++h.seq;
  const since = new Date(Date.now() - RANGES[h.range].ms).toISOString();
  const r = await api("GET", base() + "/integrations/" + li.integration.id + "/history?since=" + encodeURIComponent(since));
  if (seq !== h.seq || !li.isConnected) return;
  if (!r.ok) {
    h.key = null; // try again at the next refresh
    field(li, "chart-caption").textContent = "The sync history cannot be loaded: " + r.data.error;
    return;
  }
  h.records = r.data.syncs;
  h.loadedAt = Date.now();
  drawChart(li);
  drawTable(li);
}

const failedSync = (r) => r.result === "failed" || r.result === "partial";

function shortNumber(n) {
  if (n >= 1e6) return (n / 1e6).toFixed(n >= 1e7 ? 0 : 1).replace(/\.0$/, "") + "M";
  if (n >= 1e4) return Math.round(n / 1e3) + "k";
  return n.toLocaleString("en-US");
}

function bytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1048576) return (n / 1024).toFixed(1) + " KB";
  return (n / 1048576).toFixed(1) + " MB";
}

function took(ms) {
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  return Math.round(ms / 60000) + " min";
}

/** 1, 2 or 5 times a power of ten, at least `v` (an axis's top). */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v);
}

const TICK_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800]
  .map((s) => s * 1000);

function tickLabel(t, step) {
  const d = new Date(t);
  if (step >= 86400000) return (d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate());
  const hm = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
  return step < 60000 ? hm + ":" + pad(d.getUTCSeconds()) : hm;
}

function node(tag, attrs, parent, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  if (parent) parent.append(e);
  return e;
}

/** What a failure mark says, on focus, hover and to a screen reader. */
function failureWords(r) {
  const e = r.error || {};
  const codes = [e.http_status != null ? "HTTP " + e.http_status : null, e.code != null ? "HEC code " + e.code : null].filter(Boolean);
  return {
    title: (r.result === "partial" ? "Partial sync: " + plural(r.events.audit + r.events.jobs, "event") + " delivered, then it failed" : "Failed sync") +
      " at " + utc(new Date(r.started_at)),
    said: e.text ? "Splunk said: " + e.text + (codes.length ? " (" + codes.join(", ") + ")" : "") : "",
    advice: (e.kind === "transient" ? "Retrying by itself: " : "Needs action: ") + (e.advice || ""),
  };
}

/** Events per sync above, backlog after each sync below, failures marked: inline SVG. */
function drawChart(li) {
  const h = hist(li);
  const plot = field(li, "plot");
  const focused = plot.contains(document.activeElement) ? document.activeElement.dataset.t : null;
  const tipShown = !field(li, "tip").hidden;
  hideTip(li);
  const now = Date.now();
  const from = now - RANGES[h.range].ms;
  const syncs = (h.records || []).map((r) => Object.assign({ t: Date.parse(r.started_at) }, r))
    .filter((r) => r.t >= from).sort((a, b) => a.t - b.t);
  const W = Math.max(280, Math.round(plot.clientWidth || 600));
  const m = { left: 52, right: 16, top: 22 };
  const evH = 100, gap = 30, blH = 56, axisH = 24;
  const H = m.top + evH + gap + blH + axisH;
  const pw = W - m.left - m.right;
  // The period shown: from the first sync in the range (the whole range is mostly empty
  // for a new integration) to now.
  const first = syncs.length ? syncs[0].t : from;
  const padMs = Math.max((now - first) * 0.04, 2000);
  const x0 = Math.max(from, first - padMs);
  const x1 = now + padMs / 2;
  const x = (t) => m.left + ((t - x0) / (x1 - x0)) * pw;
  const evMax = niceMax(Math.max(0, ...syncs.map((r) => r.events.audit + r.events.jobs)));
  const blMax = niceMax(Math.max(0, ...syncs.map((r) => r.backlog_after || 0)));
  const evY = (v) => m.top + evH - (v / evMax) * evH;
  const blTop = m.top + evH + gap;
  const blY = (v) => blTop + blH - (v / blMax) * blH;

  const svg = node("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "group",
    "aria-label": "Chart of the syncs of " + li.integration.name + ": events delivered per sync, and the backlog after each sync" });
  const art = node("g", { "aria-hidden": "true" }, svg);
  for (const [top, height, max, label] of [[m.top, evH, evMax, "events per sync"], [blTop, blH, blMax, "backlog"]]) {
    node("text", { x: m.left, y: top - 6, class: "panel" }, art, label);
    for (const f of [0, 0.5, 1]) {
      const y = top + height - f * height;
      node("line", { x1: m.left, x2: W - m.right, y1: y, y2: y, class: f === 0 ? "base" : "grid" }, art);
      // Events are whole: no label between two whole numbers.
      if (Number.isInteger(max * f)) node("text", { x: m.left - 6, y: y + 4, "text-anchor": "end" }, art, shortNumber(max * f));
    }
  }
  const step = TICK_STEPS.find((s) => (x1 - x0) / s <= Math.max(2, Math.floor(pw / 90))) || TICK_STEPS[TICK_STEPS.length - 1];
  for (let t = Math.ceil(x0 / step) * step; t <= x1; t += step) {
    node("line", { x1: x(t), x2: x(t), y1: blTop + blH, y2: blTop + blH + 4, class: "base" }, art);
    node("text", { x: x(t), y: H - 6, "text-anchor": "middle" }, art, tickLabel(t, step));
  }
  node("text", { x: W - m.right, y: m.top - 6, "text-anchor": "end" }, art, "UTC");
  if (!syncs.length) {
    node("text", { x: m.left + pw / 2, y: m.top + evH / 2, "text-anchor": "middle", class: "empty" }, art, "No sync in this period yet");
  }
  // The backlog: an area under its line.
  const bl = syncs.filter((r) => r.backlog_after != null);
  if (bl.length) {
    const line = bl.map((r, i) => (i ? "L" : "M") + x(r.t).toFixed(1) + "," + blY(r.backlog_after).toFixed(1)).join(" ");
    node("path", { d: line + " L" + x(bl[bl.length - 1].t).toFixed(1) + "," + blY(0) + " L" + x(bl[0].t).toFixed(1) + "," + blY(0) + " Z", class: "backlog-area" }, art);
    node("path", { d: line, class: "backlog-line" }, art);
  }
  // Events delivered: one point per sync.
  if (syncs.length > 1) {
    node("path", { d: syncs.map((r, i) => (i ? "L" : "M") + x(r.t).toFixed(1) + "," + evY(r.events.audit + r.events.jobs).toFixed(1)).join(" "), class: "events-line" }, art);
  }
  const r = Math.max(1.5, Math.min(3.5, pw / Math.max(1, syncs.length) / 3));
  for (const s of syncs) {
    node("circle", { cx: x(s.t).toFixed(1), cy: evY(s.events.audit + s.events.jobs).toFixed(1), r, class: "pt " + s.result, "data-point": "" }, art);
  }
  // Failures: a line through both panels, and a mark above that takes the focus. One
  // mark is in the tab order; the arrow keys go from one to the next.
  const failures = syncs.filter(failedSync);
  for (const s of failures) node("line", { x1: x(s.t), x2: x(s.t), y1: m.top, y2: blTop + blH, class: "fail-line" }, art);
  const marks = failures.map((s) => {
    const w = failureWords(s);
    const g = node("g", { class: "fail", role: "img", tabindex: "-1", "data-t": s.started_at,
      "aria-label": [w.title, w.said, w.advice].filter(Boolean).join(". ") }, svg);
    const cx = x(s.t), cy = m.top - 10;
    node("circle", { cx, cy, r: 10, class: "ring" }, g);
    node("path", { d: "M" + (cx - 6) + "," + (cy - 5) + " L" + (cx + 6) + "," + (cy - 5) + " L" + cx + "," + (cy + 6) + " Z" }, g);
    g.record = s;
    return g;
  });
  const current = marks.find((g) => g.dataset.t === focused) || marks[marks.length - 1];
  if (current) current.setAttribute("tabindex", "0");
  plot.replaceChildren(svg);
  if (focused && current && current.dataset.t === focused) {
    current.focus();
    if (!tipShown) hideTip(li); // dismissed before the redraw: it stays so
  }
  const delivered = syncs.reduce((n, s) => n + s.events.audit + s.events.jobs, 0);
  const nFailed = syncs.filter((s) => s.result === "failed").length;
  const nPartial = syncs.filter((s) => s.result === "partial").length;
  const latest = syncs[syncs.length - 1];
  field(li, "chart-caption").textContent = RANGES[h.range].label + ": " + (syncs.length === 0 ? "no sync." :
    plural(syncs.length, "sync") + " since " + utc(new Date(syncs[0].t)) + ", " + plural(delivered, "event") + " delivered, " +
    plural(nFailed, "failed sync") + (nPartial ? ", " + plural(nPartial, "partial sync") : "") +
    (latest.backlog_after != null ? "; backlog after the latest: " + plural(latest.backlog_after, "event") : "") +
    ". The table below lists every sync" + (syncs.some(failedSync) ? "; focus or point at a red mark for a failure's advice." : "."));
}

function markKey(li, e) {
  const marks = [...field(li, "plot").querySelectorAll(".fail")];
  const i = marks.indexOf(e.target.closest(".fail"));
  if (i < 0) return;
  let to = null;
  if (e.key === "ArrowLeft" || e.key === "ArrowUp") to = Math.max(0, i - 1);
  else if (e.key === "ArrowRight" || e.key === "ArrowDown") to = Math.min(marks.length - 1, i + 1);
  else if (e.key === "Home") to = 0;
  else if (e.key === "End") to = marks.length - 1;
  else if (e.key === "Escape") return hideTip(li);
  if (to == null) return;
  e.preventDefault();
  marks.forEach((g, j) => g.setAttribute("tabindex", j === to ? "0" : "-1"));
  marks[to].focus();
}

function showTip(li, mark) {
  const tip = field(li, "tip");
  const w = failureWords(mark.record);
  tip.replaceChildren(el("p", w.title, "tip-title"), ...[w.said, w.advice].filter(Boolean).map((t) => el("p", t)));
  tip.hidden = false;
  // Beside the mark, on the side with more room, so that the sync below it stays in sight.
  const box = field(li, "chart").getBoundingClientRect();
  const at = mark.getBoundingClientRect();
  const x = at.left - box.left;
  const room = Math.max(0, box.width - tip.offsetWidth);
  const left = x > box.width / 2 ? x - tip.offsetWidth - 8 : x + at.width + 8;
  tip.style.left = Math.min(Math.max(0, left), room) + "px";
  tip.style.top = (at.top - box.top) + "px";
}

function hideTip(li) {
  field(li, "tip").hidden = true;
}

/** The chart's text alternative: every sync of the period in words, newest first. */
function drawTable(li) {
  const h = hist(li);
  const from = Date.now() - RANGES[h.range].ms;
  const syncs = (h.records || []).filter((r) => Date.parse(r.started_at) >= from);
  const shown = h.all ? syncs : syncs.slice(0, TABLE_ROWS);
  const wrap = field(li, "syncs-wrap");
  wrap.hidden = syncs.length === 0;
  const title = (h.all || syncs.length <= TABLE_ROWS ? "Syncs of " + li.integration.name
    : "The latest " + TABLE_ROWS + " syncs of " + li.integration.name) + ", newest first (" + RANGES[h.range].label.toLowerCase() + ")";
  // Above the scrolling table, so that it is read whole at any width; the caption names the table.
  field(li, "syncs-title").textContent = syncs.length ? title : "";
  field(li, "syncs-caption").textContent = title;
  wrap.querySelector("tbody").replaceChildren(...shown.map(syncRow));
  const more = li.querySelector("[data-a=all-syncs]");
  more.hidden = syncs.length <= TABLE_ROWS;
  more.textContent = h.all ? "Show the latest " + TABLE_ROWS + " only" : "Show all " + plural(syncs.length, "sync") + " of the period";
}

function syncRow(r) {
  const row = el("tr");
  const per = (n, b) => (n === 0 ? "none" : plural(n, "event") + " · " + bytes(b));
  const details = el("td");
  if (r.error) {
    const e = r.error;
    const codes = [e.http_status != null ? "HTTP " + e.http_status : null, e.code != null ? "HEC code " + e.code : null].filter(Boolean);
    details.append(el("span", e.text + (codes.length ? " (" + codes.join(", ") + ")" : "") + (e.kind === "transient" ? " · retried by itself" : " · needs action")));
    const more = el("details");
    more.append(el("summary", "What to do"), el("p", e.advice));
    details.append(more);
  }
  if (r.dead_lettered) details.append(el("span", " " + plural(r.dead_lettered, "event") + " refused as bad data (dead letters)"));
  row.append(el("td", utc(new Date(r.started_at)).replace(" UTC", "")), el("td", RESULT_WORDS[r.result], "outcome " + r.result),
    el("td", took(r.duration_ms), "num"), el("td", per(r.events.audit, r.bytes.audit), "num"),
    el("td", per(r.events.jobs, r.bytes.jobs), "num"),
    el("td", r.backlog_after == null ? "unknown" : r.backlog_after === 0 ? "none" : plural(r.backlog_after, "event"), "num"), details);
  return row;
}

let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => { for (const li of cards.values()) if (li.hist && li.hist.records) drawChart(li); }, 150);
});

// ---- what the card's buttons do ----
async function act(action, li) {
  const it = li.integration;
  const path = base() + "/integrations/" + it.id;
  const result = field(li, "result");
  if (action === "edit") return openEditor(it, li.querySelector("[data-a=edit]"));
  if (action === "replay") return toggleReplay(li);
  if (action === "replay-close") {
    field(li, "replay-form").hidden = true;
    return li.querySelector("[data-a=replay]").focus();
  }
  if (action === "test") {
    result.replaceChildren(el("p", "Testing the connection…"));
    const r = await api("POST", path + "/test");
    result.replaceChildren(...(r.ok ? [el("p", "Connection test at " + utc(new Date(r.data.checked_at)) + ":"), ...reportNodes(r.data)] : [el("p", r.data.error)]));
    return render(it, li.status);
  }
  if (action === "sync") return syncNow(li, path);
  if (action === "delete") return remove(li, path);
  if (action === "dead") return deadLetters(li, path);
}

/** A connection test: its summary when it passed, else which step failed and why (the summary repeats it). */
function reportNodes(report) {
  const ul = el("ul", null, "steps");
  for (const s of report.steps) ul.append(el("li", (s.ok ? "✓ " : "✗ ") + s.message));
  return [el("p", report.ok ? "✓ " + report.summary : "✗ The connection test failed:"), ul];
}

async function syncNow(li, path) {
  const result = field(li, "result");
  const r = await api("POST", path + "/sync");
  if (!r.ok) {
    result.replaceChildren(el("p", r.data.error));
    return;
  }
  li.syncAsked = r.data.requested_at;
  result.replaceChildren(el("p", "Sync started at " + utc(new Date(r.data.requested_at)) + "…"));
  // Poll this card quickly until its sync ends, instead of waiting for the next refresh.
  const deadline = Date.now() + 10 * 60 * 1000;
  while (li.syncAsked && li.isConnected && Date.now() < deadline) {
    await new Promise((done) => setTimeout(done, 500));
    const st = await api("GET", path + "/status");
    if (st.ok) render(li.integration, st.data);
  }
}

/** The status's `last_sync` that started at or after the request is the one asked for. */
function checkSync(li, st) {
  const s = st.last_sync;
  if (!s || Date.parse(s.started_at) < Date.parse(li.syncAsked)) return;
  li.syncAsked = null;
  const at = " at " + utc(new Date(s.finished_at));
  const busy = st.last_error && st.last_error.kind === "transient";
  const text = !s.ok ? "Sync failed" + at + (busy ? ": Splunk is busy or unreachable; siemsync retries by itself." : ": see what needs action above.")
    : s.events === 0 ? "Sync finished" + at + ": nothing new to send, everything was delivered."
      : "Sync finished" + at + ": " + plural(s.events, "event") + " delivered.";
  field(li, "result").replaceChildren(el("p", text));
}

async function remove(li, path) {
  const it = li.integration;
  if (!window.confirm("Delete the integration \"" + it.name + "\"? Its progress and dead letters are removed too.")) return;
  const r = await api("DELETE", path);
  if (!r.ok) {
    field(li, "result").replaceChildren(el("p", r.data.error));
    return;
  }
  li.remove();
  cards.delete(it.id);
  deleted.add(it.id);
  $("empty").hidden = cards.size > 0;
  notice("Deleted \"" + it.name + "\".");
  $("add").focus();
}

// ---- dead letters: which event, why, and the event itself ----
async function deadLetters(li, path) {
  const result = field(li, "result");
  const r = await api("GET", path + "/dead-letters");
  if (!r.ok) {
    result.replaceChildren(el("p", r.data.error));
    return;
  }
  const head = el("p", r.data.total === 0 ? "No dead letters: Splunk has refused no event."
    : plural(r.data.total, "event") + " Splunk refused as bad data" + (r.data.total > r.data.dead_letters.length ? " (the newest " + r.data.dead_letters.length + " shown)" : "") + ":");
  const ul = el("ul", null, "dead-letters");
  ul.append(...r.data.dead_letters.map(deadLetter));
  result.replaceChildren(head, ul);
}

function summaryOf(source, e) {
  const text = (v) => (v == null ? null : typeof v === "string" ? v : JSON.stringify(v));
  if (source === "audit") {
    return [text(e.event) && "“" + text(e.event) + "”", e.user && "by " + e.user, e.ip_address && "from " + e.ip_address,
      e.time && "at " + utc(new Date(e.time))].filter(Boolean).join(" ");
  }
  return [e.type && e.type + " job", e.status, e.description, e.progress != null && "progress " + e.progress].filter(Boolean).join(" · ");
}

function deadLetter(d) {
  const sent = d.event || {};
  const e = sent.event || {};
  const id = (d.source === "audit" ? e.id : e.job) || "without an id";
  const item = el("li", null, "dead-letter");
  const title = el("p");
  title.append(el("strong", "Event "), el("strong", id), document.createTextNode(" · " + SOURCE_NAMES[d.source] + " · refused " + when(d.at)));
  title.querySelectorAll("strong")[1].dataset.f = "dl-id";
  const why = el("p", "Why: " + d.reason.text + (d.reason.advice ? " — " + d.reason.advice : ""));
  const json = JSON.stringify(sent, null, 2);
  const details = el("details");
  const pre = el("pre", json);
  details.append(el("summary", "The event as sent to Splunk"), pre);
  const row = el("div", null, "copy-row");
  const copy = el("button", "Copy event");
  copy.type = "button";
  copy.dataset.a = "copy";
  copy.setAttribute("aria-label", "Copy event " + id + " as JSON");
  const copied = el("span", "", "muted");
  copied.dataset.f = "copied";
  copied.setAttribute("role", "status");
  copy.addEventListener("click", () => copyText(json, copied, details, pre));
  row.append(copy, copied);
  item.append(title, el("p", summaryOf(d.source, e)), why, row, details);
  return item;
}

async function copyText(text, status, details, pre) {
  try {
    await navigator.clipboard.writeText(text);
    status.textContent = "Copied the event to the clipboard.";
    return;
  } catch (_) {
    // Without clipboard access (an insecure origin), select the text for the user.
  }
  details.open = true;
  const range = document.createRange();
  range.selectNodeContents(pre);
  const sel = window.getSelection();
  sel.removeAllRanges();
  sel.addRange(range);
  status.textContent = document.execCommand("copy") ? "Copied the event to the clipboard." : "The event is selected below: copy it with Ctrl+C.";
}

// ---- replay: a window in UTC, counted before it starts ----
const toInput = (d) => d.toISOString().slice(0, 19);
/** A datetime-local value is read as UTC, as its label says, whatever the browser's zone. */
const fromInput = (v) => (v ? (v.length === 16 ? v + ":00" : v) + "Z" : null);

function toggleReplay(li) {
  const form = field(li, "replay-form");
  form.hidden = !form.hidden;
  if (!form.hidden) form.querySelector("[data-preset]").focus();
}

function preset(li, which) {
  const form = field(li, "replay-form");
  const to = new Date(Math.floor(Date.now() / 1000) * 1000);
  const from = new Date(to.getTime() - (which === "day" ? 86400 : 3600) * 1000);
  form.from.value = toInput(from);
  form.to.value = toInput(to);
  schedulePreview(li);
}

function schedulePreview(li) {
  clearTimeout(li.previewTimer);
  li.previewTimer = setTimeout(() => preview(li), 250);
}

async function preview(li) {
  const form = field(li, "replay-form");
  const out = field(li, "replay-preview");
  const start = form.querySelector("button[type=submit]");
  start.disabled = true;
  const from = fromInput(form.from.value);
  const to = fromInput(form.to.value);
  if (!from || !to) return void (out.textContent = "Choose the window: from and to, in UTC.");
  if (Date.parse(from) > Date.parse(to)) return void (out.textContent = "“From” must not be after “To”.");
  const seq = (li.previewSeq || 0) + 1;
  li.previewSeq = seq;
  out.textContent = "Counting the events in this window…";
  const r = await api("GET", base() + "/integrations/" + li.integration.id + "/replay/preview?from=" +
    encodeURIComponent(from) + "&to=" + encodeURIComponent(to));
  if (seq !== li.previewSeq) return; // a newer window is being counted
  if (!r.ok) return void (out.textContent = plain(r.data.error).text);
  const parts = Object.entries(r.data.counts).map(([s, n]) => plural(n, s === "audit" ? "audit event" : "job event"));
  out.replaceChildren(el("span", "From " + utc(new Date(from)) + " to " + utc(new Date(to)) + ", the retained events hold " + parts.join(" and ") + ". "));
  if (r.data.total === 0) {
    out.append(el("span", "Nothing to replay in this window."));
    start.textContent = "Start replay";
  } else {
    out.append(el("span", "Splunk receives these events again: any it already has become duplicates (an audit event keeps its id, so a search can remove them).", "warn"));
    start.textContent = "Replay " + plural(r.data.total, "event");
    start.disabled = false;
  }
  start.setAttribute("aria-label", start.textContent + " to " + li.integration.name);
}

async function startReplay(event, li) {
  event.preventDefault();
  const form = event.target;
  const r = await api("POST", base() + "/integrations/" + li.integration.id + "/replay",
    { from: fromInput(form.from.value), to: fromInput(form.to.value) });
  const result = field(li, "result");
  if (!r.ok) {
    result.replaceChildren(el("p", plain(r.data.error).text));
    return;
  }
  form.hidden = true;
  result.replaceChildren(el("p", "Replay started: its progress shows above, and Splunk receives the window's events beside the live ones."));
  li.querySelector("[data-a=replay]").focus();
}

// ---- the form ----
const FIELDS = ["name", "hec_token", "hec_uri", "sources", "enabled", "index", "ca_pem", "indexer_ack"];
const inputOf = (f) => $(f === "sources" ? "f-audit" : "f-" + f);
let editing = null; // the integration being edited, or null when adding
let lastTest = null; // the report of the test that kept the form open
let opener = null; // the button that opened the form, for focus on Cancel
let saving = false;

function clearErrors() {
  for (const f of FIELDS) {
    $("err-" + f).textContent = "";
    inputOf(f).removeAttribute("aria-invalid");
  }
  $("form-error").textContent = "";
}

function hideTest() {
  lastTest = null;
  $("form-test").hidden = true;
  $("form-test").replaceChildren();
  $("save-anyway").hidden = true;
}

function openEditor(it, from) {
  editing = it || null;
  opener = from || $("add");
  clearErrors();
  hideTest();
  notice("");
  $("editor-title").textContent = it ? "Edit " + it.name : "Add integration";
  $("f-name").value = it ? it.name : "";
  $("f-hec_token").value = "";
  showToken(false);
  $("f-hec_uri").value = it ? it.hec_uri : "";
  $("f-audit").checked = it ? it.sources.includes("audit") : true;
  $("f-jobs").checked = it ? it.sources.includes("jobs") : true;
  $("f-enabled").checked = it ? it.enabled : false;
  $("f-index").value = (it && it.index) || "";
  $("f-ca_pem").value = (it && it.ca_pem) || "";
  $("f-indexer_ack").checked = !!(it && it.indexer_ack);
  $("advanced").open = !!(it && (it.index || it.ca_pem || it.indexer_ack));
  uriChanged();
  show("editor");
  $("f-name").focus();
}

function closeEditor() {
  editing = null;
  show("list");
  refresh();
  if (opener && opener.isConnected) opener.focus();
}

function showToken(on) {
  $("f-hec_token").type = on ? "text" : "password";
  $("show-token").setAttribute("aria-pressed", String(on));
  $("show-token").textContent = on ? "Hide" : "Show";
}

/** scheme://host:port as siemsync reads it (the port a bare host defaults to included). */
function serverOf(uri) {
  const m = /^\s*([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)/.exec(uri || "");
  if (!m) return null;
  const scheme = m[1].toLowerCase();
  const auth = m[2].slice(m[2].lastIndexOf("@") + 1);
  const hp = /^(\[[^\]]*\]|[^:]*)(?::(\d+))?$/.exec(auth);
  if (!hp || !hp[1]) return null;
  const hostname = hp[1].toLowerCase();
  const path = m[3].replace(/\/+$/, "");
  const port = hp[2] ? Number(hp[2])
    : path === "" ? (hostname.startsWith("http-inputs") && scheme === "https" ? 443 : 8088)
      : scheme === "https" ? 443 : 80;
  return scheme + "://" + hostname + ":" + port;
}

/** A saved token goes only to the server it was entered for: a new one asks for it again. */
function destinationMoved() {
  const now = serverOf($("f-hec_uri").value);
  return !!(editing && now && now !== serverOf(editing.hec_uri));
}

function uriChanged() {
  const moved = destinationMoved();
  $("token-again").hidden = !moved;
  $("token-again").textContent = moved ? TOKEN_AGAIN : "";
  $("f-hec_token").required = !editing || moved;
  $("f-hec_token").setAttribute("aria-required", String(!editing || moved));
  $("f-hec_token").placeholder = !editing ? ""
    : moved ? "Required: the destination changed"
      : "Leave empty to keep the current token (" + editing.hec_token + ")";
}

function collect() {
  return {
    name: $("f-name").value.trim(),
    hec_token: $("f-hec_token").value.trim(),
    hec_uri: $("f-hec_uri").value.trim(),
    sources: ["audit", "jobs"].filter((s) => $("f-" + s).checked),
    enabled: $("f-enabled").checked,
    index: $("f-index").value.trim(),
    ca_pem: $("f-ca_pem").value.trim(),
    indexer_ack: $("f-indexer_ack").checked,
  };
}

/** What is wrong with the HEC URI, in plain words; the API judges the rest (addresses, DNS). */
function uriProblem(u) {
  if (!u) return "Enter the HEC URI, e.g. https://splunk.example.com:8088.";
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)(\?[^#]*)?/.exec(u);
  if (!m) return "The HEC URI must start with https:// (or http://), e.g. https://splunk.example.com:8088.";
  const scheme = m[1].toLowerCase();
  if (scheme !== "https" && scheme !== "http") return "The HEC URI must start with https:// (or http://), not " + scheme + "://.";
  if (m[2].includes("@")) return "Leave the user name and password out of the HEC URI: the token goes in the HEC token field.";
  if (!serverOf(u)) return "The HEC URI must name the Splunk server, e.g. https://splunk.example.com:8088.";
  const port = /:(\d+)$/.exec(m[2]);
  if (port && (Number(port[1]) < 1 || Number(port[1]) > 65535)) return "The port of the HEC URI must be a number from 1 to 65535.";
  if (m[4]) return "Remove the ?… part from the HEC URI: the token goes in the HEC token field.";
  const path = m[3].replace(/\/+$/, "").toLowerCase();
  if (path.includes("/services/collector/raw")) return "Use the event endpoint, not /raw: the server's address (https://host:8088) or a path ending in /services/collector/event.";
  if (path && !/\/services\/collector(\/event(\/1\.0)?)?$/.test(path)) return "Use the Splunk server's address (https://host:8088), or a path ending in /services/collector or /services/collector/event.";
  return null;
}

/** Every mistake of the form at once, in plain words. */
function validate(v) {
  const errors = [];
  const add = (f, message) => errors.push({ field: f, message });
  if (!v.name) add("name", "Enter a name for the integration, e.g. Main Splunk.");
  else if ([...v.name].length > 100) add("name", "Use at most 100 characters for the name.");
  if (!v.hec_token) {
    if (!editing) add("hec_token", "Enter the HEC token: copy its value from Splunk (Settings > Data inputs > HTTP Event Collector).");
    else if (destinationMoved()) add("hec_token", TOKEN_AGAIN);
  } else if (/\s/.test(v.hec_token)) add("hec_token", "The HEC token cannot contain spaces: copy its value from Splunk again.");
  else if (v.hec_token.length > 256) add("hec_token", "This is longer than a HEC token (at most 256 characters): copy its value from Splunk again.");
  const uri = uriProblem(v.hec_uri);
  if (uri) add("hec_uri", uri);
  if (!v.sources.length) add("sources", "Choose at least one data source: the audit log, the job monitor, or both.");
  if (v.index && !/^[a-z0-9][a-z0-9_-]{0,79}$/.test(v.index)) add("index", "An index name has lowercase letters, digits, '_' and '-' only (e.g. main), at most 80 characters.");
  if (v.ca_pem && !v.ca_pem.includes("-----BEGIN CERTIFICATE-----")) add("ca_pem", "Paste the CA certificate in PEM form: the text from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----.");
  return errors;
}

function showErrors(errors) {
  for (const e of errors) {
    $("err-" + e.field).textContent = e.message;
    inputOf(e.field).setAttribute("aria-invalid", "true");
    if (["index", "ca_pem", "indexer_ack"].includes(e.field)) $("advanced").open = true;
  }
  const names = errors.map((e) => FIELD_NAMES[e.field]);
  $("form-error").textContent = errors.length === 1 ? "Please fix 1 field: " + names[0] + "."
    : "Please fix " + errors.length + " fields: " + names.join(", ") + ".";
  const first = FIELDS.map(inputOf).find((i) => i.getAttribute("aria-invalid") === "true");
  if (first) first.focus();
}

/** An API refusal: beside its field when it names one, in the page's words. */
function showRefusal(r) {
  const said = plain(r.data.error);
  if (said.field && FIELDS.includes(said.field)) return showErrors([{ field: said.field, message: said.text }]);
  $("form-error").textContent = said.text;
  $("form-error").focus();
}

function bodyOf(v) {
  const body = { name: v.name, hec_uri: v.hec_uri, sources: v.sources, enabled: v.enabled, indexer_ack: v.indexer_ack };
  if (v.hec_token) body.hec_token = v.hec_token;
  // null clears a saved index or CA; a new integration just leaves them out.
  if (editing) {
    body.index = v.index || null;
    body.ca_pem = v.ca_pem || null;
  } else {
    if (v.index) body.index = v.index;
    if (v.ca_pem) body.ca_pem = v.ca_pem;
  }
  return body;
}

/** Settings that decide where events go and how: only those are tested before saving. */
function needsTest(v) {
  return !editing || !!v.hec_token || v.hec_uri !== editing.hec_uri || (v.index || null) !== (editing.index || null) ||
    (v.ca_pem || null) !== (editing.ca_pem || null) || v.indexer_ack !== editing.indexer_ack;
}

function setSaving(on, what) {
  saving = on;
  $("save").disabled = on;
  $("save-anyway").disabled = on;
  $("save").textContent = on ? what || "Saving…" : "Save";
}

async function save(event, anyway) {
  if (event) event.preventDefault();
  if (saving) return; // a second click while the first is under way does nothing
  setSaving(true, anyway ? "Saving…" : "Testing…");
  try {
    clearErrors();
    const v = collect();
    $("f-hec_token").value = v.hec_token; // the trimmed token, as it is saved
    const errors = validate(v);
    if (errors.length) return showErrors(errors);
    const body = bodyOf(v);
    if (anyway) return await commit(body, lastTest);
    hideTest();
    if (!needsTest(v)) return await commit(body, null);
    showPanel([el("p", "Testing the connection to Splunk before saving…")], "");
    const t = await api("POST", base() + "/integrations/test", editing ? Object.assign({ id: editing.id }, body) : body);
    if (!t.ok) {
      hideTest();
      return showRefusal(t);
    }
    if (!t.data.ok || t.data.warnings.length) return showTestResult(t.data);
    return await commit(body, t.data);
  } finally {
    setSaving(false);
  }
}

function showPanel(nodes, kind) {
  const panel = $("form-test");
  panel.className = "test-panel" + (kind ? " " + kind : "");
  panel.replaceChildren(...nodes);
  panel.hidden = false;
}

/** The test failed or warned: the form stays open, and the customer decides. */
function showTestResult(report) {
  lastTest = report;
  const nodes = [el("p", report.ok ? "✓ The connection works." : "✗ The connection test failed; nothing is saved yet.", "error-title")];
  if (!report.ok) nodes.push(reportNodes(report)[1]);
  for (const w of report.warnings) nodes.push(el("p", "⚠ " + w.message, "warn"));
  nodes.push(el("p", "Fix the settings and press Save to test again, or press Save anyway to keep them as they are."));
  showPanel(nodes, report.ok ? "" : "bad");
  $("save-anyway").hidden = false;
  $("save-anyway").focus();
}

async function commit(body, report) {
  const r = editing
    ? await api("PATCH", base() + "/integrations/" + editing.id, body)
    : await api("POST", base() + "/integrations", body);
  if (!r.ok) return showRefusal(r);
  const it = r.data;
  editing = null;
  hideTest();
  deleted.delete(it.id);
  const li = cards.get(it.id) || newCard(it);
  li.addedAt = Date.now();
  const result = field(li, "result");
  const saved = "Saved at " + utc(new Date());
  if (report && report.ok) result.replaceChildren(el("p", saved + ". " + report.summary), ...reportNodes(report).slice(1));
  else if (report) result.replaceChildren(el("p", saved + " without a working connection: see what needs action above."));
  else result.replaceChildren(el("p", saved + "."));
  render(it, li.status || null);
  $("empty").hidden = true;
  show("list");
  notice("Saved \"" + it.name + "\".");
  li.scrollIntoView({ block: "center" });
  li.focus();
  await refresh();
}

// ---- wiring ----
$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", signOut);
$("banner-signin").addEventListener("click", signOut);
$("to-overview").addEventListener("click", goToOverview);
$("missing-back").addEventListener("click", goToOverview);
$("picker-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if ($("account-picker").value) goToAccount($("account-picker").value);
});
$("new-account-form").addEventListener("submit", addAccount);
for (const b of document.querySelectorAll("#fleet [data-sort]")) b.addEventListener("click", () => sortFleet(b.dataset.sort));
$("fleet-prev").addEventListener("click", () => { if (fleet.page > 1) setFleet({ page: fleet.page - 1 }); });
$("fleet-next").addEventListener("click", () => {
  if ($("fleet-next").getAttribute("aria-disabled") !== "true") setFleet({ page: fleet.page + 1 });
});
$("fleet-per-page").addEventListener("change", () => setFleet({ per_page: Number($("fleet-per-page").value), page: 1 }));
$("enable-feature").addEventListener("click", async () => {
  if (await setFeature(session.account, true)) openAccount(session.account);
});
$("add").addEventListener("click", () => openEditor(null, $("add")));
$("cancel").addEventListener("click", closeEditor);
$("editor-form").addEventListener("submit", (e) => save(e, false));
$("editor-form").addEventListener("keydown", (e) => { if (e.key === "Escape") closeEditor(); });
$("save-anyway").addEventListener("click", () => save(null, true));
$("show-token").addEventListener("click", () => showToken($("f-hec_token").type === "password"));
$("f-hec_token").addEventListener("change", () => { $("f-hec_token").value = $("f-hec_token").value.trim(); });
$("f-hec_uri").addEventListener("input", uriChanged);
window.addEventListener("hashchange", () => { if (session.token && isAdmin()) route(); });
if (session.token && session.role) route(); else signOut();
