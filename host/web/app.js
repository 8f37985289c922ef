// Ward's web page: a client of the public API (/api/v1) and nothing else.
// One script, no build step: views are rendered from the API's JSON, live
// parts follow the API's server-sent events (read with fetch, since
// EventSource cannot send a token).
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "ward.token";
const ENDED = ["SUCCESS", "WARNING", "FAILED", "KILLED"];
const COLUMNS = [
  ["CREATED", "Created"], ["RUNNING", "Running"], ["PAUSED", "Paused"], ["RETRYING", "Retrying"],
  ["SUCCESS", "Succeeded"], ["WARNING", "Warning"], ["FAILED", "Failed"], ["KILLED", "Killed"],
];
// Which scope each button needs, as the API's table says.
const NEEDS = {
  cancel: "executions:control", pause: "executions:control", resume: "executions:control",
  restart: "executions:control", replay: "executions:control",
  trigger: "executions:trigger", upload: "plugins:write",
};

let me = null; // GET /whoami
let tasksById = new Map();
let live = null; // the AbortController of the current view's streams

// ---- small helpers -------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// Sets a node's children: arrays flattened, nothing for null or false.
function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity)
    .filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
}

function toast(message) {
  const box = document.getElementById("toast");
  const item = el("div", {}, message);
  box.append(item);
  setTimeout(() => item.remove(), 6000);
}

function ago(ts) {
  if (!ts) return "";
  const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

function ms(v) {
  if (v === null || v === undefined) return "";
  return v < 1000 ? `${v.toFixed(1)} ms` : `${(v / 1000).toFixed(2)} s`;
}

function badge(state) {
  return el("span", { class: `badge ${state}` }, state);
}

// A task's name, else (not readable, or not yet known) the end of its id:
// ids are UUID v7, whose first digits are a time most tasks share.
function taskName(id) {
  const t = tasksById.get(id);
  return t ? t.name : `task …${id.slice(-8)}`;
}

function can(scope) {
  return !!me && (me.scopes.includes("admin") || me.scopes.includes(scope));
}

// A button the caller's token may not use is disabled, saying why.
function actionButton(label, action, onclick) {
  const scope = NEEDS[action];
  const allowed = !scope || can(scope);
  return el("button", {
    type: "button", onclick: allowed ? onclick : null, disabled: !allowed,
    title: allowed ? null : `this token lacks the scope ${scope}`,
    "aria-label": allowed ? null : `${label} (this token lacks the scope ${scope})`,
  }, label);
}

// ---- the API ---------------------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY); }

// Signs out: the token and what was learned with it.
function forget() {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  tasksById = new Map();
  tasksRefused = false;
  taskLookups.clear();
}

// The Authorization header of the token in use, none without one (a
// server run with --no-auth needs none).
function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

async function api(path, opts = {}) {
  const sent = token();
  const headers = Object.assign(authHeaders(), opts.headers || {});
  if (opts.json !== undefined) {
    headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(opts.json);
  }
  const r = await fetch(API + path, { method: opts.method || "GET", headers, body: opts.body, signal: opts.signal });
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  // A refused token is forgotten (not one signed in with since).
  if (r.status === 401 && !opts.quiet && token() === sent) {
    forget();
    render();
  }
  return { status: r.status, ok: r.ok, json, text, headers: r.headers };
}

function problem(r) {
  return `${r.status}: ${(r.json && r.json.detail) || r.text}`;
}

// An answer that is not OK, as an error saying what the API said.
function refusal(r) {
  return new Error((r.json && r.json.detail) || `${r.status} ${r.text}`);
}

async function must(path, opts) {
  const r = await api(path, opts);
  if (!r.ok) throw refusal(r);
  return r.json;
}

// Waits `ms`, or less when `signal` aborts.
function pause(ms, signal) {
  return new Promise((res) => {
    const timer = setTimeout(res, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); res(); }, { once: true });
  });
}

// Follows a server-sent event stream of the API until `signal` aborts, the
// stream says `end`, or `onEvent` returns false. A stream that drops, ends
// or answers an error is opened again (waiting longer each time, up to
// 15 s), with `Last-Event-ID` the last id seen, so that the API resumes
// after it: nothing missed, nothing repeated (an id not above the last one
// is skipped all the same). 401, 403 and 404 stop it: asking again would
// get the same answer.
async function follow(path, onEvent, signal) {
  let lastId = null;
  let wait = 500;
  while (!signal.aborted) {
    const headers = authHeaders();
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    try {
      const r = await fetch(API + path, { headers, signal });
      if ([401, 403, 404].includes(r.status)) { toast(`stream ${path}: ${r.status}`); return; }
      if (r.ok) {
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        let event = { event: "message", data: [], id: null };
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let nl;
          while ((nl = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, nl).replace(/\r$/, "");
            buffer = buffer.slice(nl + 1);
            if (line === "") {
              const { id } = event;
              const seen = id !== null && lastId !== null && /^\d+$/.test(id) && /^\d+$/.test(lastId) && BigInt(id) <= BigInt(lastId);
              if (id !== null && !seen) lastId = id;
              if (event.data.length && !seen) {
                wait = 500;
                let data = event.data.join("\n");
                try { data = JSON.parse(data); } catch (_) { /* text */ }
                if (onEvent(event.event, data, id) === false || event.event === "end") { reader.cancel().catch(() => {}); return; }
              }
              event = { event: "message", data: [], id: null };
            } else {
              const colon = line.indexOf(":");
              if (colon === 0) continue; // a comment: the keep-alive
              const field = colon < 0 ? line : line.slice(0, colon);
              const v = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
              if (field === "event") event.event = v;
              else if (field === "data") event.data.push(v);
              else if (field === "id" && !v.includes("\0")) event.id = v;
            }
          }
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    await pause(wait, signal);
    wait = Math.min(wait * 2, 15000);
  }
}

// The tasks, for their names. Without tasks:read (or when the API refuses
// for another reason) null: the views show task ids instead.
let tasksRefused = false;
const taskLookups = new Map();
async function loadTasks(optional = false) {
  if (optional && !can("tasks:read")) { tasksRefused = true; return null; }
  const r = await api("/tasks");
  if (!r.ok) {
    if (r.status === 403) tasksRefused = true;
    if (optional) return null;
    throw refusal(r);
  }
  tasksRefused = false;
  tasksById = new Map(r.json.tasks.map((t) => [t.id, t]));
  return r.json.tasks;
}

// A task created since the list was read: asked for once per id (by
// whichever view meets it first); true when it is now known.
function learnTask(id) {
  if (!id || tasksById.has(id)) return Promise.resolve(tasksById.has(id));
  if (tasksRefused) return Promise.resolve(false);
  if (!taskLookups.has(id)) {
    taskLookups.set(id, api(`/tasks/${id}`, { quiet: true }).then((r) => {
      if (r.ok) tasksById.set(id, r.json);
      else if (r.status === 403) tasksRefused = true;
      return r.ok;
    }, () => { taskLookups.delete(id); return false; }));
  }
  return taskLookups.get(id);
}

async function control(id, action, answerBox) {
  const r = await api(`/executions/${id}/${action}`, { method: "POST" });
  const text = r.ok ? `${action}: ${r.status} → ${r.json.state}` : `${action}: ${r.status} ${r.json ? r.json.detail : r.text}`;
  if (answerBox) answerBox.textContent = text;
  toast(text);
  return r;
}

// ---- views -----------------------------------------------------------------

function loginView(main, message) {
  const input = el("input", { id: "token", type: "password", autocomplete: "off", required: true,
    placeholder: "ward_…" });
  const form = el("form", { class: "login", onsubmit: async (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    const r = await api("/whoami", { quiet: true });
    if (!r.ok) {
      sessionStorage.removeItem(TOKEN_KEY);
      loginView(main, (r.json && r.json.detail) || "that token was refused");
      return;
    }
    me = r.json;
    render();
  } },
  el("h2", {}, "Sign in"),
  el("p", {}, "Ward's API needs a token. A first start writes an admin token to admin.token in the data dir."),
  el("label", { for: "token" }, "API token", input),
  el("p", {}, el("button", { class: "primary", type: "submit" }, "Use this token")),
  message ? el("p", { class: "problems", role: "alert" }, message) : null);
  fill(main, form);
  input.focus();
}

// Board: executions by state, moved as their events arrive.
async function boardView(main, signal, params) {
  // Without tasks:read the cards show task ids, and the filter takes one.
  const tasks = await loadTasks(true);
  const filterTask = params.get("task") || "";
  const filterNs = params.get("namespace") || "";
  const taskOption = (t) => el("option", { value: t.id, selected: t.id === filterTask }, `${t.namespace}/${t.name}`);
  const taskSelect = tasks
    ? el("select", { id: "board-task", onchange: () => go("board", { task: taskSelect.value, namespace: filterNs }) },
      el("option", { value: "" }, "all tasks"), tasks.map(taskOption))
    : el("input", { id: "board-task", value: filterTask, placeholder: "task id",
      onchange: () => go("board", { task: taskSelect.value.trim(), namespace: filterNs }) });
  const nsInput = el("input", { id: "board-ns", value: filterNs, placeholder: "any",
    onchange: () => go("board", { task: filterTask, namespace: nsInput.value }) });
  const columns = new Map();
  const board = el("div", { class: "board" }, COLUMNS.map(([state, title]) => {
    const list = el("div", { class: "cards", "data-state": state });
    const count = el("span", { class: "muted" }, "0");
    columns.set(state, { list, count });
    return el("section", { class: "column", "aria-label": title }, el("h3", {}, title, count), list);
  }));
  fill(main, el("h2", {}, "Board"),
    el("div", { class: "filters" }, el("label", { for: "board-task" }, "Task", taskSelect),
      el("label", { for: "board-ns" }, "Namespace", nsInput)), board);

  const cards = new Map();
  const learning = new Set();
  const column = (state) => (state === "KILLING" ? "KILLED" : state === "RESTARTED" ? "CREATED" : state);
  const counts = () => { for (const [, c] of columns) c.count.textContent = c.list.children.length; };
  const place = (e) => {
    let card = cards.get(e.id);
    if (!card) {
      card = el("article", { class: "card", "data-id": e.id });
      cards.set(e.id, card);
    }
    const state = e.board_state || e.state;
    card.className = `card state-${state}`;
    card.dataset.state = state;
    const step = e.current_step ? e.current_step.name : "";
    const actions = el("div", { class: "actions" });
    if (!ENDED.includes(e.state)) {
      actions.append(actionButton("Cancel", "cancel", () => control(e.id, "cancel")));
      if (e.state === "PAUSED") actions.append(actionButton("Resume", "resume", () => control(e.id, "resume")));
      else actions.append(actionButton("Pause", "pause", () => control(e.id, "pause")));
    }
    fill(card, 
      el("a", { href: `#/executions/${e.id}`, title: `task ${e.task_id}` }, taskName(e.task_id)),
      el("div", { class: "meta" }, step ? `step ${step} · ` : "", e.attempt ? `attempt ${e.attempt} · ` : "",
        ago(e.created_at)),
      el("div", { class: "meta" }, e.id.slice(0, 13)),
      actions);
    const target = columns.get(column(state));
    if (target && card.parentElement !== target.list) target.list.prepend(card);
    counts();
    // A task created since the board opened: its name, asked for once.
    if (!tasksById.has(e.task_id) && !learning.has(e.task_id)) {
      learning.add(e.task_id);
      learnTask(e.task_id).then((found) => {
        if (!found || signal.aborted) return;
        if (tasks) taskSelect.append(taskOption(tasksById.get(e.task_id)));
        for (const x of known.values()) if (x.task_id === e.task_id) place(x);
      });
    }
  };
  const query = new URLSearchParams({ limit: "200" });
  if (filterTask) query.set("task_id", filterTask);
  if (filterNs) query.set("namespace", filterNs);
  const page = await must(`/executions?${query}`);
  const known = new Map(page.executions.map((e) => [e.id, e]));
  for (const e of page.executions.slice().reverse()) place(e);
  // Attempt numbers and retries of what is under way.
  for (const e of page.executions.filter((x) => !ENDED.includes(x.state)).slice(0, 40)) {
    refreshCard(e.id);
  }
  async function refreshCard(id) {
    const r = await api(`/executions/${id}`);
    if (!r.ok) return;
    const e = r.json;
    const runs = e.task_runs || [];
    const last = runs[runs.length - 1];
    e.attempt = last ? last.attempts.length : 0;
    if (e.state === "RUNNING" && last && last.state === "RETRYING") e.board_state = "RETRYING";
    known.set(id, e);
    place(e);
  }
  const events = new URLSearchParams({ follow: "true", tail: "1" });
  if (filterNs) events.set("namespace", filterNs);
  if (filterTask) events.set("task", filterTask);
  follow(`/events?${events}`, (kind, ev) => {
    if (kind !== "event" || !ev.execution_id) return;
    if (filterTask && ev.task_id !== filterTask) return;
    const e = known.get(ev.execution_id);
    if (!e || ev.kind !== "execution.state") { refreshCard(ev.execution_id); return; }
    e.state = ev.to;
    e.board_state = null;
    place(e);
    if (!ENDED.includes(ev.to)) refreshCard(ev.execution_id);
  }, signal);
}

// Grid: the executions table, a page at a time (the API's cursors).
async function gridView(main, signal, params) {
  await loadTasks(true);
  const f = {
    status: params.get("status") || "", task_id: params.get("task_id") || "",
    since: params.get("since") || "", until: params.get("until") || "", parent_id: params.get("parent_id") || "",
    cursor: params.get("cursor") || "", back: params.get("back") || "",
  };
  const field = (name, label, attrs = {}) => el("label", { for: `f-${name}` }, label,
    el("input", Object.assign({ id: `f-${name}`, name, value: f[name] }, attrs)));
  const form = el("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const next = {};
    for (const [k, v] of data.entries()) if (v) next[k] = v;
    go("grid", next);
  } },
  field("status", "State", { placeholder: "e.g. failed,running" }),
  field("task_id", "Task", { placeholder: "id or name", list: "task-names" }),
  el("datalist", { id: "task-names" }, [...tasksById.values()].map((t) => el("option", { value: t.name }))),
  field("since", "Since", { placeholder: "2026-12-01T00:00:00Z" }),
  field("until", "Until", { placeholder: "RFC 3339" }),
  field("parent_id", "Parent", { placeholder: "execution id" }),
  el("button", { type: "submit", class: "primary" }, "Filter"));
  const query = new URLSearchParams({ limit: "50", fields: "id,task_id,namespace,state,trigger,created_at,started_at,ended_at,duration_ms,current_step,fuel_used,parent_id" });
  for (const k of ["status", "task_id", "since", "until", "parent_id", "cursor"]) if (f[k]) query.set(k, f[k]);
  const r = await api(`/executions?${query}`);
  if (!r.ok) { fill(main, el("h2", {}, "Executions"), form, el("p", { class: "problems", role: "alert" }, r.json ? r.json.detail : r.text)); return; }
  let rows = r.json.executions;
  const columns = [
    ["state", "Status"], ["started_at", "Started"], ["ended_at", "Updated"], ["current_step", "Step"],
    ["namespace", "Namespace"], ["task_id", "Task"], ["trigger", "Trigger"], ["duration_ms", "Duration"],
    ["fuel_used", "Fuel"], ["id", "Id"],
  ];
  let sortKey = params.get("sort") || "";
  const body = el("tbody");
  const draw = () => {
    const sorted = rows.slice();
    if (sortKey) {
      const key = sortKey.replace(/^-/, "");
      const dir = sortKey.startsWith("-") ? -1 : 1;
      const value = (e) => (key === "task_id" ? taskName(e.task_id) : key === "current_step" ? (e.current_step || {}).name : e[key]) ?? "";
      sorted.sort((a, b) => (value(a) > value(b) ? dir : value(a) < value(b) ? -dir : 0));
    }
    fill(body, ...sorted.map((e) => el("tr", {},
      el("td", {}, badge(e.state)),
      el("td", { title: e.started_at || "" }, e.started_at ? ago(e.started_at) : ""),
      el("td", { title: e.ended_at || e.created_at }, ago(e.ended_at || e.created_at)),
      el("td", {}, e.current_step ? e.current_step.name : "", e.current_step && e.current_step.description ? el("div", { class: "muted" }, e.current_step.description) : null),
      el("td", {}, e.namespace),
      el("td", { title: e.task_id }, taskName(e.task_id)),
      el("td", {}, e.trigger),
      el("td", {}, ms(e.duration_ms)),
      el("td", {}, e.fuel_used ?? ""),
      el("td", {}, el("a", { href: `#/executions/${e.id}` }, e.id.slice(0, 13))))));
  };
  const head = el("tr", {}, columns.map(([key, title]) => el("th", { scope: "col", "aria-sort": sortKey === key ? "ascending" : sortKey === `-${key}` ? "descending" : null },
    el("button", { type: "button", onclick: () => { sortKey = sortKey === key ? `-${key}` : key; draw(); head.querySelectorAll("th").forEach((th, i) => th.setAttribute("aria-sort", columns[i][0] === sortKey.replace(/^-/, "") ? (sortKey.startsWith("-") ? "descending" : "ascending") : "none")); } }, title))));
  draw();
  // Tasks created since the list was read: their names, then draw again.
  const unknown = [...new Set(rows.map((e) => e.task_id))].filter((t) => !tasksById.has(t));
  if (unknown.length) {
    Promise.all(unknown.map(learnTask)).then((found) => { if (found.some(Boolean) && !signal.aborted) draw(); });
  }
  const filters = Object.fromEntries(Object.entries(f).filter(([k, v]) => v && k !== "cursor" && k !== "back"));
  const backs = f.back ? f.back.split(",") : [];
  const pager = el("div", { class: "actions" },
    el("button", { type: "button", disabled: !f.cursor, onclick: () => {
      const prev = backs.slice(0, -1);
      const cursor = backs[backs.length - 1] || "";
      go("grid", Object.assign({}, filters, cursor ? { cursor } : {}, prev.length ? { back: prev.join(",") } : {}));
    } }, "← Newer"),
    el("button", { type: "button", id: "older", disabled: !r.json.next_cursor, onclick: () => go("grid", Object.assign({}, filters, { cursor: r.json.next_cursor, back: [...backs, f.cursor || ""].join(",") })) }, "Older →"),
    el("span", { class: "muted" }, `${rows.length} shown`),
    el("button", { type: "button", id: "export-csv", onclick: () => exportAll(query, "csv", exported) }, "Export CSV"),
    el("button", { type: "button", id: "export-json", onclick: () => exportAll(query, "json", exported) }, "Export JSON"));
  const exported = el("p", { class: "answer", id: "export-answer", role: "status" });
  fill(main, el("h2", {}, "Executions"), form,
    el("table", { "aria-label": "Executions" }, el("thead", {}, head), body), pager, exported);
}

// Everything the grid's filter matches (not only the page shown), a
// thousand at a time through the API's cursors, up to EXPORT_CAP rows;
// `answer` says how many, that the cap was reached, or what went wrong.
const EXPORT_CAP = 50000;
async function exportAll(query, format, answer) {
  if (answer.dataset.busy) return;
  answer.dataset.busy = "true";
  try {
    await exportPages(query, format, answer);
  } catch (e) {
    fill(answer, el("span", { class: "problems", role: "alert" }, `Export failed: ${e.message || e}`));
  } finally {
    delete answer.dataset.busy;
  }
}

async function exportPages(query, format, answer) {
  const q = new URLSearchParams(query);
  q.delete("cursor");
  q.delete("fields");
  const name = `executions.${format}`;
  const parts = [];
  let count = 0;
  let cursor = null;
  let capped = false;
  answer.textContent = `Exporting ${name}…`;
  for (;;) {
    if (cursor) q.set("cursor", cursor);
    q.set("limit", String(Math.min(1000, EXPORT_CAP - count)));
    let page;
    if (format === "json") {
      const r = await api(`/executions?${q}`);
      if (!r.ok) throw new Error(problem(r));
      page = r.json;
      parts.push(...page.executions);
      count += page.executions.length;
    } else {
      // A CSV page carries its next cursor in the X-Next-Cursor header.
      const csv = await api(`/executions?${q}&format=csv`);
      if (!csv.ok) throw new Error(problem(csv));
      page = { next_cursor: csv.headers.get("x-next-cursor") };
      const lines = csv.text.split("\r\n").filter((line) => line !== "");
      if (!parts.length) parts.push(lines[0]);
      parts.push(...lines.slice(1));
      count += lines.length - 1;
    }
    cursor = page.next_cursor;
    if (!cursor) break;
    if (count >= EXPORT_CAP) { capped = true; break; }
    answer.textContent = `Exporting ${name}… ${count} executions so far`;
  }
  const blob = format === "json"
    ? new Blob([JSON.stringify({ executions: parts, next_cursor: capped ? cursor : null }, null, 2)], { type: "application/json" })
    : new Blob([parts.map((line) => `${line}\r\n`).join("")], { type: "text/csv" });
  save(blob, name);
  answer.textContent = capped
    ? `Exported the newest ${count} executions to ${name}: capped at ${EXPORT_CAP}; narrow the filter (since, until) for the rest.`
    : `Exported ${count} executions to ${name}.`;
}

function save(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// Execution detail: everything the API says of one execution, logs live.
async function detailView(main, signal, id) {
  const header = el("div");
  const tree = el("div", { class: "panel" });
  const side = el("div", { class: "panel" });
  const logs = el("pre", { class: "logs", "aria-label": "Logs", tabindex: "0" });
  const answer = el("p", { class: "answer", role: "status" });
  const media = el("div", { class: "media" });
  const metrics = el("div");
  const dataset = el("div");
  const family = el("div");
  fill(main, header, answer,
    el("div", { class: "grid2" }, el("section", {}, el("h3", {}, "Steps"), tree), el("section", {}, el("h3", {}, "Outputs and variables"), side)),
    el("h3", {}, "Logs"), logs,
    el("div", { class: "grid2" }, el("section", {}, el("h3", {}, "Metrics"), metrics), el("section", {}, el("h3", {}, "Media"), media)),
    el("div", { class: "grid2" }, el("section", {}, el("h3", {}, "Dataset rows"), dataset), el("section", {}, el("h3", {}, "Parent and children"), family)));
  if (!tasksById.size) await loadTasks(true).catch(() => null);

  // Read again on each event: an answer older than one shown is dropped.
  let refreshRun = 0;
  async function refresh() {
    const run = ++refreshRun;
    const r = await api(`/executions/${id}`, { signal });
    if (run !== refreshRun || signal.aborted) return null;
    if (!r.ok) { fill(header, el("h2", {}, "Execution"), el("p", { class: "problems", role: "alert" }, r.json ? r.json.detail : r.text)); return null; }
    const e = r.json;
    const buttons = el("div", { class: "actions" },
      ["cancel", "pause", "resume", "restart", "replay"].map((a) => actionButton(a[0].toUpperCase() + a.slice(1), a, async () => {
        const res = await control(id, a, answer);
        if (a === "replay" && res.ok) location.hash = `#/executions/${res.json.id}`;
        refresh();
      })));
    if (!tasksById.has(e.task_id)) learnTask(e.task_id).then((found) => (found && !signal.aborted ? refresh() : null)).catch(() => {});
    fill(header,
      el("h2", {}, `${taskName(e.task_id)} `, badge(e.state)),
      el("p", { class: "muted" }, `${e.id} · ${e.namespace} · ${e.trigger} · created ${e.created_at}`,
        e.duration_ms ? ` · ${ms(e.duration_ms)}` : "", e.error ? el("div", { class: "problems" }, `${e.error.kind}: ${e.error.message}`) : null),
      buttons);
    const byStep = new Map();
    for (const run of e.task_runs || []) {
      if (!byStep.has(run.step)) byStep.set(run.step, []);
      byStep.get(run.step).push(run);
    }
    const attemptItem = (a) => el("li", {},
      `attempt ${a.number}: ${a.status}`,
      a.error ? el("span", { class: "problems" }, ` ${a.error.kind}: ${a.error.message.split("\n")[0]}`) : "",
      a.usage ? el("span", { class: "muted" }, ` · fuel ${a.usage.fuel_consumed} · ${ms(a.usage.wall_ms)} · ${Math.round(a.usage.memory_peak_bytes / 1024)} KiB`) : "");
    const runItem = (run) => el("li", {},
      run.index !== null && run.index !== undefined ? `[${run.index}] ` : "", badge(run.state),
      el("ul", { class: "tree" }, run.attempts.map(attemptItem)));
    const stepItem = ([step, runs]) => el("li", {}, el("strong", {}, step),
      el("ul", { class: "tree" }, runs.map(runItem)));
    fill(tree, el("ul", { class: "tree" }, [...byStep].map(stepItem)));
    fill(side, el("h4", {}, "Outputs"), el("pre", {}, JSON.stringify(e.outputs, null, 2)),
      el("h4", {}, "Variables"), el("pre", {}, JSON.stringify(e.variables, null, 2)),
      el("h4", {}, "Input"), el("pre", {}, JSON.stringify(e.input, null, 2)),
      e.result !== null && e.result !== undefined ? [el("h4", {}, "Result"), el("pre", {}, JSON.stringify(e.result, null, 2))] : null);
    return e;
  }
  const e = await refresh();
  if (!e) return;
  const quietly = (p) => p.catch((err) => { if (!signal.aborted) toast(String(err.message || err)); });

  // Logs, live until the execution ends.
  follow(`/executions/${id}/logs?follow=true`, (kind, line) => {
    if (kind === "log") {
      logs.append(el("div", { class: line.level }, `${line.ts.slice(11, 23)} ${line.level.padEnd(5)} ${line.source.padEnd(6)} ${line.message}`));
      logs.scrollTop = logs.scrollHeight;
    }
  }, signal);
  // Anything else that changes: read the execution again.
  let pending = null;
  follow(`/executions/${id}/events?follow=true`, (kind) => {
    if (kind === "event" && !pending) pending = setTimeout(() => { pending = null; quietly(refresh().then(extras)); }, 200);
    if (kind === "end") setTimeout(() => quietly(refresh().then(extras)), 100);
  }, signal);

  // Metrics, media, dataset rows and family, again on each event. Runs
  // overlap: the latest wins (an older one drops its answers), each part is
  // replaced at once, built off the page, and media links are signed only
  // when the media listed change (no flicker, no new links per event; runs
  // that meet the same change share one signing).
  let extrasRun = 0;
  let mediaShown = null; // the ids of the media shown
  let mediaSigning = null; // { ids, figures: a promise } under way
  async function extras() {
    const run = ++extrasRun;
    const stale = () => run !== extrasRun || signal.aborted;
    const [m, list, rows, kids] = await Promise.all([
      api(`/executions/${id}/metrics`, { signal }),
      api(`/executions/${id}/media`, { signal }),
      api(`/executions/${id}/dataset?limit=50`, { signal }),
      api(`/executions?parent_id=${id}&limit=100&fields=id,state,task_id`, { signal }),
    ]);
    if (stale()) return;
    if (m.ok) fill(metrics, metricChart(m.json.metrics));
    if (rows.ok && rows.json && rows.json.rows) {
      fill(dataset, rows.json.rows.length ? el("pre", {}, rows.json.rows.map((r) => JSON.stringify(r.data)).join("\n")) : el("p", { class: "muted" }, "none"));
    }
    fill(family,
      e.parent_id ? el("p", {}, "Parent: ", el("a", { href: `#/executions/${e.parent_id}` }, e.parent_id)) : el("p", { class: "muted" }, "No parent"),
      e.replay_of ? el("p", {}, "Replay of: ", el("a", { href: `#/executions/${e.replay_of}` }, e.replay_of)) : null,
      kids.ok && kids.json.executions.length ? el("ul", {}, kids.json.executions.map((k) => el("li", {}, badge(k.state), " ", el("a", { href: `#/executions/${k.id}` }, `${taskName(k.task_id)} ${k.id.slice(0, 13)}`)))) : el("p", { class: "muted" }, "No children"));
    if (!list.ok) { if (mediaShown === null) fill(media, el("p", { class: "problems" }, problem(list))); return; }
    const ids = list.json.media.map((x) => x.id).join(",");
    if (ids === mediaShown) return;
    if (!mediaSigning || mediaSigning.ids !== ids) {
      const signing = { ids };
      signing.figures = mediaFigures(list.json.media, signal)
        .catch((err) => { if (mediaSigning === signing) mediaSigning = null; throw err; });
      mediaSigning = signing;
    }
    const figures = await mediaSigning.figures;
    if (stale()) return;
    fill(media, figures);
    mediaShown = ids;
    mediaSigning = null;
    media.dataset.count = String(list.json.media.length);
  }
  quietly(extras());
}

// Media: images previewed and everything downloadable through signed links
// (GET /media/{id}/link, which needs media:read); without that scope, or
// when a link is refused, listed but disabled, saying why.
async function mediaFigures(items, signal) {
  if (!items.length) return [el("p", { class: "muted" }, "none")];
  const lacking = can("media:read") ? null : "this token lacks the scope media:read";
  const links = lacking ? [] : await Promise.all(items.map((item) => api(`/media/${item.id}/link?expires_in=1h`, { signal })));
  const figures = items.map((item, i) => {
    const link = links[i];
    const about = ` · ${item.content_type} · ${item.size} bytes`;
    const why = lacking || (link.ok ? null : `its link was refused: ${problem(link)}`);
    if (why) {
      return el("figure", { class: "disabled" }, el("figcaption", {},
        el("span", { class: "name", "aria-disabled": "true", title: why, "aria-label": `${item.name} (${why})` }, item.name), about));
    }
    // The link's path and query: this page's own origin, however it was reached.
    const u = new URL(link.json.url);
    const url = u.pathname + u.search;
    return el("figure", {},
      item.content_type.startsWith("image/") ? el("img", { src: url, alt: item.name }) : null,
      el("figcaption", {}, el("a", { href: url, download: item.name }, item.name), about));
  });
  return [lacking ? el("p", { class: "muted" }, `No previews or downloads: ${lacking}.`) : null, figures];
}

function metricChart(list) {
  if (!list.length) return el("p", { class: "muted" }, "none");
  const rows = list.map((m) => {
    const tags = Object.entries(m.tags || {}).map(([k, v]) => `${k}=${v}`).join(",");
    const name = `${m.name}${tags ? `{${tags}}` : ""}`;
    const value = m.kind === "counter" || m.value !== undefined ? m.value : m.sum_ns / Math.max(1, m.count) / 1e6;
    const unit = m.value !== undefined ? "" : " ms avg";
    return { name, value: Number(value) || 0, unit, attempt: m.attempt };
  });
  const max = Math.max(...rows.map((r) => Math.abs(r.value)), 1);
  return el("table", { "aria-label": "Metrics" }, el("tbody", {}, rows.map((r) => el("tr", {},
    el("td", {}, r.name), el("td", {}, `${Math.round(r.value * 100) / 100}${r.unit}`),
    el("td", { style: null }, bar(r.value / max))))));
}

function bar(fraction) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", "120");
  svg.setAttribute("height", "10");
  svg.setAttribute("aria-hidden", "true");
  const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
  rect.setAttribute("width", String(Math.max(1, Math.round(120 * Math.abs(fraction)))));
  rect.setAttribute("height", "10");
  rect.setAttribute("fill", "#0a58ca");
  svg.append(rect);
  return svg;
}

// Tasks: the list, a definition, and a trigger form.
async function tasksView(main, signal) {
  const tasks = await loadTasks();
  fill(main, el("h2", {}, "Tasks"), el("table", { "aria-label": "Tasks" },
    el("thead", {}, el("tr", {}, ["Name", "Namespace", "Action or steps", "Version", "Updated"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, tasks.map((t) => el("tr", {},
      el("td", {}, el("a", { href: `#/tasks/${t.id}` }, t.name)), el("td", {}, t.namespace),
      el("td", {}, t.action || `${(t.steps || []).length} steps`), el("td", {}, t.version), el("td", {}, ago(t.updated_at)))))));
}

async function taskView(main, signal, id) {
  const t = await must(`/tasks/${id}`);
  const schema = t.input_schema;
  const answer = el("div", { class: "answer", role: "status" });
  let form;
  const props = schema && schema.type === "object" && schema.properties ? Object.entries(schema.properties) : null;
  if (props && props.every(([, p]) => ["string", "number", "integer", "boolean"].includes(p.type))) {
    const inputs = props.map(([name, p]) => {
      const idf = `in-${name}`;
      const value = t.input && t.input[name] !== undefined ? t.input[name] : p.default;
      const input = p.type === "boolean"
        ? el("input", { id: idf, name, type: "checkbox", checked: !!value })
        : el("input", { id: idf, name, type: p.type === "string" ? "text" : "number", value: value ?? "",
          required: (schema.required || []).includes(name), step: p.type === "number" ? "any" : null });
      return el("label", { for: idf }, `${name}${p.description ? ` — ${p.description}` : ""}`, input);
    });
    form = el("form", { class: "filters", onsubmit: (e) => {
      e.preventDefault();
      const input = {};
      for (const [name, p] of props) {
        const field = form.elements[name];
        if (p.type === "boolean") input[name] = field.checked;
        else if (field.value !== "") input[name] = p.type === "string" ? field.value : Number(field.value);
      }
      trigger(input);
    } }, inputs, el("span", {}, actionButton("Trigger", "trigger", null)));
    form.querySelector("button").type = "submit";
  } else {
    const text = el("textarea", { id: "input-json", "aria-label": "Input (JSON)" }, JSON.stringify(t.input ?? {}, null, 2));
    form = el("form", { onsubmit: (e) => {
      e.preventDefault();
      let input;
      try { input = JSON.parse(text.value || "{}"); } catch (err) { fill(answer, el("p", { class: "problems" }, `not JSON: ${err.message}`)); return; }
      trigger(input);
    } }, el("label", { for: "input-json" }, "Input (JSON)"), text, el("p", {}, actionButton("Trigger", "trigger", null)));
    form.querySelector("button").type = "submit";
  }
  if (!can("executions:trigger")) form.querySelector("button").type = "button";
  async function trigger(input) {
    const r = await api(`/tasks/${t.id}/executions`, { method: "POST", json: { input } });
    if (r.ok) location.hash = `#/executions/${r.json.id}`;
    else fill(answer, el("p", { class: "problems", role: "alert" }, `${r.status}: ${r.json ? r.json.detail : r.text}`),
      r.json && r.json.problems ? el("ul", { class: "problems" }, r.json.problems.map((p) => el("li", {}, p))) : null);
  }
  fill(main, el("h2", {}, `Task ${t.name}`), el("p", { class: "muted" }, `${t.namespace} · version ${t.version} · ${t.id}`),
    el("h3", {}, "Trigger"), form, answer,
    el("p", {}, el("a", { href: `#/grid?task_id=${t.id}` }, "Its executions")),
    el("h3", {}, "Definition"), el("pre", {}, JSON.stringify(t, null, 2)));
}

// Plugins: the list and an upload form.
async function pluginsView(main) {
  const list = await must("/plugins");
  const name = el("input", { id: "p-name", name: "name", required: true });
  const version = el("input", { id: "p-version", name: "version" });
  const file = el("input", { id: "p-file", name: "file", type: "file", accept: ".wasm", required: true });
  const answer = el("div", { class: "answer", role: "status" });
  const upload = actionButton("Upload", "upload", null);
  if (can("plugins:write")) upload.type = "submit";
  const form = el("form", { class: "filters", onsubmit: async (e) => {
    e.preventDefault();
    const bytes = await file.files[0].arrayBuffer();
    const q = new URLSearchParams({ name: name.value });
    if (version.value) q.set("version", version.value);
    const r = await api(`/plugins?${q}`, { method: "POST", body: bytes, headers: { "Content-Type": "application/wasm" } });
    if (r.ok) {
      // The answer stays; only the table is read again.
      fill(answer, el("p", {}, `${r.status === 201 ? "Uploaded" : "Already there"}: ${r.json.name} ${r.json.id}`));
      const again = await api("/plugins");
      if (again.ok) table.replaceWith(table = pluginTable(again.json.plugins));
    } else fill(answer, el("p", { class: "problems", role: "alert" }, problem(r)),
      r.json && r.json.problems ? el("ul", { class: "problems" }, r.json.problems.map((p) => el("li", {}, p))) : null);
  } },
  el("label", { for: "p-name" }, "Name", name), el("label", { for: "p-version" }, "Version", version),
  el("label", { for: "p-file" }, "Component (.wasm)", file), upload);
  let table = pluginTable(list.plugins);
  fill(main, el("h2", {}, "Plugins"), form, answer, table);
}

function pluginTable(plugins) {
  return el("table", { "aria-label": "Plugins" },
    el("thead", {}, el("tr", {}, ["Name", "Version", "Namespace", "Digest", "Size", "Uploaded"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, plugins.map((p) => el("tr", {}, el("td", {}, p.name), el("td", {}, p.version || ""), el("td", {}, p.namespace),
      el("td", {}, el("code", {}, p.id.slice(0, 19))), el("td", {}, `${Math.round(p.size / 1024)} KiB`), el("td", {}, ago(p.created_at))))));
}

// Overview: figures over time from the analytics API.
async function overviewView(main) {
  // The last day up to the next whole minute: the same window (and the
  // server's cached answer) for every load within that minute.
  const until = new Date(Math.ceil(Date.now() / 60000) * 60000);
  const since = new Date(until.getTime() - 24 * 3600 * 1000);
  const a = await must(`/analytics?bucket=1h&since=${since.toISOString()}&until=${until.toISOString()}`);
  const workers = await api("/workers");
  const slots = workers.ok ? workers.json.workers.reduce((n, w) => n + w.slots, 0) : 0;
  const buckets = a.buckets;
  // A bucket carries its figures at its top level, beside `start`.
  const series = (f) => buckets.map((b) => f(b));
  const hour = 3600 * 1000;
  const charts = [
    ["Throughput (executions started per hour)", series((f) => f.started), "bars"],
    ["Success rate", series((f) => (f.success_rate === null ? null : f.success_rate * 100)), "line"],
    ["Queue wait p50 (ms)", series((f) => (f.queue_wait_ms ? f.queue_wait_ms.p50 : null)), "line"],
    ["Worker utilization (% of slots busy)", series((f) => {
      if (!slots || !f.duration_ms) return null;
      const ended = Object.values(f.finished).reduce((n, x) => n + x, 0);
      return Math.min(100, (f.duration_ms.avg * ended) / (slots * hour) * 100);
    }), "line"],
  ];
  const t = a.totals;
  fill(main, el("h2", {}, "Overview (last 24 hours)"),
    el("p", {}, `${t.started} executions · success rate ${t.success_rate === null ? "–" : `${(t.success_rate * 100).toFixed(1)}%`} · queue wait p50 ${t.queue_wait_ms ? ms(t.queue_wait_ms.p50) : "–"} · ${slots} slots`),
    el("div", { class: "grid2" }, charts.map(([title, values, kind]) => el("section", { class: "panel" }, el("h3", {}, title), chart(values, kind, buckets)))),
    el("h3", {}, "Busiest tasks"), el("ul", {}, a.top_by_volume.map((x) => el("li", {}, `${x.name || x.task_id}: ${x.executions} executions, ${x.failures} failed`))));
}

function chart(values, kind, buckets) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 300 120");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const known = values.filter((v) => v !== null);
  const max = Math.max(1, ...known);
  svg.setAttribute("aria-label", known.length ? `from ${Math.min(...known).toFixed(1)} to ${max.toFixed(1)}` : "no data");
  const w = 300 / Math.max(1, values.length);
  if (kind === "bars") {
    values.forEach((v, i) => {
      if (!v) return;
      const r = document.createElementNS(ns, "rect");
      const h = (v / max) * 100;
      r.setAttribute("x", String(i * w + 1)); r.setAttribute("width", String(Math.max(1, w - 2)));
      r.setAttribute("y", String(110 - h)); r.setAttribute("height", String(h));
      const title = document.createElementNS(ns, "title");
      title.textContent = `${buckets[i].start}: ${v}`;
      r.append(title);
      svg.append(r);
    });
  } else {
    const points = values.map((v, i) => (v === null ? null : `${i * w + w / 2},${110 - (v / max) * 100}`)).filter(Boolean);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.join(" "));
    svg.append(line);
  }
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", "2"); label.setAttribute("y", "10");
  label.textContent = `max ${Math.round(max * 10) / 10}`;
  svg.append(label);
  return svg;
}

// ---- routing ---------------------------------------------------------------

function go(view, params = {}) {
  const q = new URLSearchParams(params).toString();
  location.hash = `#/${view}${q ? `?${q}` : ""}`;
}

async function render() {
  if (live) live.abort();
  live = new AbortController();
  const signal = live.signal;
  const main = document.getElementById("main");
  const who = document.getElementById("who");
  if (!me) {
    // Asked without a token too: a server run with --no-auth answers, and
    // then there is nothing to sign in with.
    const sent = token();
    const r = await api("/whoami", { quiet: true });
    if (signal.aborted) return;
    if (!r.ok) {
      who.textContent = "";
      if (token() === sent) forget();
      loginView(main, sent ? (r.json ? r.json.detail : "the token was refused") : null);
      return;
    }
    me = r.json;
  }
  fill(who, `${me.namespace ? `namespace ${me.namespace}` : "admin"} · ${me.scopes.join(", ")} `,
    token() ? el("button", { type: "button", onclick: () => { forget(); render(); } }, "Sign out")
      : el("span", { id: "no-auth" }, "· no token needed (auth is off)"));
  const [path, query] = (location.hash.slice(1) || "/board").split("?");
  const parts = path.split("/").filter(Boolean);
  const params = new URLSearchParams(query || "");
  const view = parts[0] || "board";
  for (const a of document.querySelectorAll("nav a")) {
    const current = a.dataset.view === view || (view === "executions" && a.dataset.view === "grid");
    if (current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  try {
    if (view === "board") await boardView(main, signal, params);
    else if (view === "grid") await gridView(main, signal, params);
    else if (view === "executions" && parts[1]) await detailView(main, signal, parts[1]);
    else if (view === "tasks" && parts[1]) await taskView(main, signal, parts[1]);
    else if (view === "tasks") await tasksView(main, signal);
    else if (view === "plugins") await pluginsView(main);
    else if (view === "overview") await overviewView(main);
    else fill(main, el("h2", {}, "Not found"), el("p", {}, el("a", { href: "#/board" }, "Back to the board")));
  } catch (e) {
    if (signal.aborted) return;
    fill(main, el("h2", {}, "Something went wrong"), el("p", { class: "problems", role: "alert" }, String(e.message || e)));
  }
  // Ready, whether the view loaded or says what went wrong.
  if (signal.aborted) return;
  main.dataset.view = view;
  main.dataset.ready = "true";
}

window.addEventListener("hashchange", () => { document.getElementById("main").dataset.ready = "false"; render(); });
render();
