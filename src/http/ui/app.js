// siemsync's SIEM integration page: plain JavaScript over the v1 API, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const session = {
  token: sessionStorage.getItem("siemsync.token"),
  account: sessionStorage.getItem("siemsync.account"),
  role: sessionStorage.getItem("siemsync.role"),
};
let editing = null; // the integration being edited, or null when adding
let timer = null;

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + session.token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: text }; }
  return { status: resp.status, ok: resp.ok, data };
}

const base = () => "/api/v1/accounts/" + encodeURIComponent(session.account);

function show(section) {
  for (const id of ["signin", "disabled", "list", "editor"]) $(id).hidden = id !== section;
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 45) return "just now";
  const units = [["day", 86400], ["hour", 3600], ["minute", 60]];
  for (const [name, size] of units) {
    const n = Math.round(s / size);
    if (n >= 1 && s >= size * 0.75) return n + " " + name + (n === 1 ? "" : "s") + " ago";
  }
  return "just now";
}

function host(uri) {
  try { return new URL(uri).host; } catch (_) { return uri; }
}

// ---- sign in ----
async function signIn(event) {
  event.preventDefault();
  $("signin-error").textContent = "";
  session.token = $("signin-token").value.trim();
  const who = await api("GET", "/api/v1/whoami");
  if (!who.ok) {
    $("signin-error").textContent = who.status === 401 ? "That token is not valid." : (who.data && who.data.error) || "Sign-in failed.";
    return;
  }
  session.role = who.data.role;
  if (who.data.role === "account") {
    session.account = who.data.account;
  } else if (who.data.role === "admin") {
    session.account = $("signin-account").value.trim();
    if (!session.account) {
      $("signin-error").textContent = "Administrators: enter the account to manage.";
      return;
    }
  } else {
    $("signin-error").textContent = "This token may only post events; sign in with an account token.";
    return;
  }
  sessionStorage.setItem("siemsync.token", session.token);
  sessionStorage.setItem("siemsync.account", session.account);
  sessionStorage.setItem("siemsync.role", session.role);
  $("signin-token").value = "";
  start();
}

function signOut() {
  sessionStorage.clear();
  session.token = session.account = session.role = null;
  clearInterval(timer);
  $("integrations").replaceChildren();
  $("who").hidden = true;
  show("signin");
}

async function start() {
  $("who").hidden = false;
  $("who-text").textContent = "Account " + session.account + (session.role === "admin" ? " (administrator)" : "");
  const account = await api("GET", base());
  if (account.status === 401) return signOut();
  if (!account.ok || !account.data.siem_enabled) {
    show("disabled");
    return;
  }
  show("list");
  await refresh();
  clearInterval(timer);
  timer = setInterval(() => { if (!$("list").hidden) refresh(); }, 2000);
}

// ---- the list ----
const cards = new Map();

async function refresh() {
  const list = await api("GET", base() + "/integrations");
  if (!list.ok) return;
  const seen = new Set();
  for (const it of list.data) {
    seen.add(it.id);
    const st = await api("GET", base() + "/integrations/" + it.id + "/status");
    render(it, st.ok ? st.data : null);
  }
  for (const [id, li] of cards) if (!seen.has(id)) { li.remove(); cards.delete(id); }
  $("empty").hidden = cards.size > 0;
}

function field(li, name) { return li.querySelector('[data-f="' + name + '"]'); }

function render(it, st) {
  let li = cards.get(it.id);
  if (!li) {
    li = $("card").content.firstElementChild.cloneNode(true);
    li.dataset.id = it.id;
    li.querySelectorAll("button[data-a]").forEach((b) => b.addEventListener("click", () => act(b.dataset.a, li)));
    field(li, "replay-form").addEventListener("submit", (e) => replay(e, li));
    cards.set(it.id, li);
    $("integrations").append(li);
  }
  li.integration = it;
  const state = st ? st.state : "pending";
  field(li, "name").textContent = it.name;
  const badge = field(li, "state");
  badge.textContent = state;
  badge.className = "badge " + state;
  badge.setAttribute("aria-label", "State: " + state);
  field(li, "host").textContent = host(it.hec_uri);
  field(li, "sources").textContent = it.sources.map((s) => (s === "audit" ? "Audit log" : "Job monitor")).join(", ");
  field(li, "enabled").textContent = it.enabled ? "Yes" : "No";
  if (st) {
    field(li, "last_success").textContent = ago(st.last_success);
    field(li, "delivered").textContent = String(st.delivered.audit + st.delivered.jobs);
    const b = st.backlog;
    field(li, "backlog").textContent = b.events === 0 ? "none"
      : b.events + " events" + (b.oldest_age_secs != null ? ", oldest " + ago(new Date(Date.now() - b.oldest_age_secs * 1000).toISOString()) : "");
    const err = st.last_error;
    field(li, "problem").hidden = !err;
    field(li, "error").textContent = err ? "Last error: " + err.text + (err.code != null ? " (HEC code " + err.code + ")" : "") : "";
    field(li, "advice").textContent = err ? err.advice : "";
    const extra = [];
    if (st.dead_letters) extra.push(st.dead_letters + " events in dead letters");
    if (st.replay) extra.push("Replay " + st.replay.state + ": " + st.replay.sent + " of " + st.replay.total + " sent");
    for (const g of st.gaps || []) extra.push(g.count + " " + g.source + " events outlived retention before delivery");
    if (st.connection_test && !st.connection_test.ok) extra.push("Connection test: " + st.connection_test.summary);
    field(li, "extra").textContent = extra.join(" · ");
  }
  li.querySelector('[data-a="edit"]').disabled = it.managed_by === "config file";
  li.querySelector('[data-a="delete"]').disabled = it.managed_by === "config file";
}

async function act(action, li) {
  const it = li.integration;
  const path = base() + "/integrations/" + it.id;
  const result = field(li, "result");
  if (action === "edit") return openEditor(it);
  if (action === "test") {
    result.textContent = "Testing the connection…";
    const r = await api("POST", path + "/test");
    if (!r.ok) { result.textContent = r.data.error; return; }
    result.replaceChildren();
    const p = document.createElement("p");
    p.textContent = (r.data.ok ? "✓ " : "✗ ") + r.data.summary;
    const ul = document.createElement("ul");
    for (const s of r.data.steps) {
      const item = document.createElement("li");
      item.textContent = (s.ok ? "✓ " : "✗ ") + s.message;
      ul.append(item);
    }
    result.append(p, ul);
    return;
  }
  if (action === "sync") {
    const r = await api("POST", path + "/sync");
    result.textContent = r.ok ? "Sync started." : r.data.error;
    return refresh();
  }
  if (action === "delete") {
    if (!window.confirm('Delete the integration "' + it.name + '"? Its progress and dead letters are removed too.')) return;
    const r = await api("DELETE", path);
    if (!r.ok) { result.textContent = r.data.error; return; }
    li.remove();
    cards.delete(it.id);
    $("empty").hidden = cards.size > 0;
    return;
  }
  if (action === "dead") {
    const r = await api("GET", path + "/dead-letters");
    if (!r.ok) { result.textContent = r.data.error; return; }
    result.replaceChildren();
    const p = document.createElement("p");
    p.textContent = r.data.total === 0 ? "No dead letters: Splunk has refused no event." : r.data.total + " events Splunk refused:";
    const ul = document.createElement("ul");
    for (const d of r.data.dead_letters) {
      const item = document.createElement("li");
      item.textContent = d.at + " · " + d.source + " · " + d.reason.text + " — " + d.reason.advice;
      ul.append(item);
    }
    result.append(p, ul);
    return;
  }
  if (action === "replay") {
    const form = field(li, "replay-form");
    form.hidden = !form.hidden;
    if (!form.hidden) form.querySelector("input").focus();
  }
}

async function replay(event, li) {
  event.preventDefault();
  const form = event.target;
  const iso = (v) => new Date(v).toISOString();
  const r = await api("POST", base() + "/integrations/" + li.integration.id + "/replay",
    { from: iso(form.from.value), to: iso(form.to.value) });
  field(li, "result").textContent = r.ok ? "Replay started." : r.data.error;
  if (r.ok) form.hidden = true;
}

// ---- the form ----
const FIELDS = ["name", "hec_token", "hec_uri", "sources", "enabled"];

function clearErrors() {
  for (const f of FIELDS) {
    $("err-" + f).textContent = "";
    const input = $("f-" + f);
    if (input) input.removeAttribute("aria-invalid");
  }
  $("form-error").textContent = "";
}

function openEditor(it) {
  editing = it || null;
  clearErrors();
  $("editor-title").textContent = it ? "Edit integration" : "Add integration";
  $("f-name").value = it ? it.name : "";
  $("f-hec_token").value = "";
  $("f-hec_token").placeholder = it ? "Leave empty to keep the current token (" + it.hec_token + ")" : "";
  $("f-hec_uri").value = it ? it.hec_uri : "";
  $("f-audit").checked = it ? it.sources.includes("audit") : true;
  $("f-jobs").checked = it ? it.sources.includes("jobs") : true;
  $("f-enabled").checked = it ? it.enabled : false;
  show("editor");
  $("f-name").focus();
}

function closeEditor() {
  editing = null;
  show("list");
  refresh();
}

async function save(event) {
  event.preventDefault();
  clearErrors();
  const body = {
    name: $("f-name").value,
    hec_uri: $("f-hec_uri").value,
    sources: ["audit", "jobs"].filter((s) => $("f-" + s).checked),
    enabled: $("f-enabled").checked,
  };
  const token = $("f-hec_token").value;
  if (!editing || token) body.hec_token = token;
  const r = editing
    ? await api("PATCH", base() + "/integrations/" + editing.id, body)
    : await api("POST", base() + "/integrations", body);
  if (r.ok) return closeEditor();
  const message = (r.data && r.data.error) || "Saving failed (HTTP " + r.status + ").";
  // The API names the field first, in backticks: show the message beside it.
  const m = /^`([a-z_]+)`/.exec(message);
  if (m && FIELDS.includes(m[1])) {
    $("err-" + m[1]).textContent = message;
    const input = $("f-" + m[1]) || $("f-audit");
    input.setAttribute("aria-invalid", "true");
    input.focus();
  } else {
    $("form-error").textContent = message;
  }
}

$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", signOut);
$("add").addEventListener("click", () => openEditor(null));
$("cancel").addEventListener("click", closeEditor);
$("editor-form").addEventListener("submit", save);
if (session.token && session.account) start(); else show("signin");
