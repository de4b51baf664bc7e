// herald's admin page: plain JavaScript against the admin API. Every value
// from the API goes into the page as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "herald-admin-token";
let token = sessionStorage.getItem(TOKEN_KEY);
let signedIn = false;
let historyJob = null;
let editing = null; // job id whose schedule is being edited
let timer = null;

const $ = (sel) => document.querySelector(sel);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (resp.status === 401) {
    signOut("The token was refused.");
    throw new ApiError(401, data);
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

function flash(message) {
  const f = $("#flash");
  f.textContent = message;
  f.hidden = !message;
}

function signOut(message) {
  token = null;
  signedIn = false;
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(timer);
  timer = null;
  $("#app").hidden = true;
  $("#sign-out").hidden = true;
  $("#sign-in").hidden = false;
  const err = $("#sign-in-error");
  err.textContent = message || "";
  err.hidden = !message;
}

async function signIn(candidate) {
  token = candidate;
  try {
    await api("GET", "/api/jobs");
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401) signOut(`Cannot reach herald: ${e.message}`);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  signedIn = true;
  $("#sign-in").hidden = true;
  $("#sign-in-error").hidden = true;
  $("#app").hidden = false;
  $("#sign-out").hidden = false;
  await refresh();
  timer = setInterval(refresh, 2000);
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "";
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function statusCell(status) {
  return el("td", { class: `status status-${status || "none"}`, text: status || "—" });
}

async function refreshReady() {
  try {
    const resp = await fetch("/readyz");
    const r = await resp.json();
    $("#offline-banner").textContent = "herald is offline: Redis is unreachable. Jobs keep firing from memory; changes reach Redis when it returns.";
    $("#offline-banner").hidden = r.mode !== "offline";
    $("#daemon").textContent = `daemon ${r.daemon} · ${r.mode}`;
  } catch (_) {
    $("#offline-banner").hidden = false;
    $("#offline-banner").textContent = "herald does not answer.";
  }
}

function jobRow(job) {
  const scheduleCell = el("td", { class: "schedule" });
  if (editing === job.id) {
    const input = el("input", { class: "schedule-input", value: job.schedule, type: "text" });
    const error = el("div", { class: "schedule-error error" });
    const save = el("button", {
      class: "save-schedule",
      text: "Save",
      onclick: async () => {
        error.textContent = "";
        try {
          await api("PATCH", `/api/jobs/${encodeURIComponent(job.id)}`, { schedule: input.value });
          editing = null;
          flash(`Schedule of ${job.id} saved.`);
          await refresh();
        } catch (e) {
          error.textContent = e.message;
        }
      },
    });
    const cancel = el("button", { class: "cancel-edit", text: "Cancel", onclick: () => { editing = null; refresh(); } });
    scheduleCell.append(input, " ", save, " ", cancel, error);
  } else {
    scheduleCell.append(
      el("code", { text: job.schedule }), " ",
      el("button", { class: "edit-schedule", text: "Edit", onclick: () => { editing = job.id; refresh(); } }),
    );
  }
  const toggle = el("input", {
    type: "checkbox",
    class: "toggle-enabled",
    checked: job.enabled,
    onchange: async (ev) => {
      try {
        await api("PATCH", `/api/jobs/${encodeURIComponent(job.id)}`, { enabled: ev.target.checked });
        flash(`${job.id} ${ev.target.checked ? "enabled" : "disabled"}.`);
      } catch (e) {
        flash(`Could not change ${job.id}: ${e.message}`);
      }
      await refresh();
    },
  });
  const last = job.last_execution;
  return el("tr", { dataset: { job: job.id } },
    el("td", { class: "job-id", text: job.id }),
    el("td", { text: job.kind }),
    scheduleCell,
    el("td", { text: job.timezone }),
    el("td", { class: "next-run", text: job.next_run || "—" }),
    statusCell(last ? last.status : null),
    el("td", {}, toggle),
    el("td", {},
      el("button", {
        class: "run-now",
        text: "Run now",
        onclick: async () => {
          try {
            const r = await api("POST", `/api/jobs/${encodeURIComponent(job.id)}/run`);
            flash(`Started ${r.run_id}.`);
            historyJob = job.id;
            await refresh();
          } catch (e) {
            flash(`Could not run ${job.id}: ${e.message}`);
          }
        },
      }), " ",
      el("button", { class: "show-history", text: "History", onclick: () => { historyJob = job.id; refresh(); } }),
    ),
  );
}

async function refreshJobs() {
  // An open editor keeps what the operator typed: do not redraw under it.
  // (A refresh still running when the next starts is harmless: each
  // replaces whole tables.)
  if (editing !== null && document.querySelector(".schedule-input")) return;
  const { jobs } = await api("GET", "/api/jobs");
  $("#jobs tbody").replaceChildren(...jobs.map(jobRow));
}

async function refreshHistory() {
  const section = $("#history");
  if (historyJob === null) { section.hidden = true; return; }
  const page = await api("GET", `/api/jobs/${encodeURIComponent(historyJob)}/executions?limit=20`);
  $("#history-job").textContent = historyJob;
  $("#executions tbody").replaceChildren(...page.executions.map((r) =>
    el("tr", { dataset: { run: r.run_id } },
      el("td", {}, el("code", { text: r.run_id })),
      statusCell(r.status),
      el("td", { text: r.trigger }),
      el("td", { text: r.scheduled_at }),
      el("td", { class: "duration", text: fmtDuration(r.duration_ms) }),
      el("td", { class: "error", text: r.error || "" }),
    )));
  section.hidden = false;
}

async function refreshUsers() {
  const { users } = await api("GET", "/api/users");
  $("#users tbody").replaceChildren(...users.map((u) =>
    el("tr", { dataset: { chat: String(u.chat_id) } },
      el("td", { text: String(u.chat_id) }),
      el("td", { text: u.name }),
      el("td", { class: "active", text: u.active ? "yes" : "no" }),
      el("td", { text: u.packs.join(", ") }),
      el("td", {}, el("button", {
        class: "toggle-active",
        text: u.active ? "Deactivate" : "Activate",
        onclick: async () => {
          try {
            await api("PATCH", `/api/users/${u.chat_id}`, { active: !u.active });
          } catch (e) {
            flash(`Could not change user ${u.chat_id}: ${e.message}`);
          }
          await refresh();
        },
      })),
    )));
  const { packs } = await api("GET", "/api/packs");
  $("#packs").replaceChildren(...packs.map((p) =>
    el("li", { text: `${p.name}: ${p.members.join(", ")}` })));
}

async function refreshDigests() {
  const { schedules } = await api("GET", "/api/digest/schedules");
  $("#digest-schedules tbody").replaceChildren(...schedules.map((s) =>
    el("tr", {},
      el("td", { text: s.profile_id }),
      el("td", { text: s.schedule_type }),
      el("td", {}, el("code", { text: s.schedule })),
      el("td", { text: s.timezone }),
      el("td", { text: s.next_run || "—" }),
      el("td", { text: s.last_run || "—" }),
    )));
  const { executions } = await api("GET", "/api/digest/executions?limit=20");
  $("#digest-executions tbody").replaceChildren(...executions.map((r) =>
    el("tr", {},
      el("td", { text: r.profile_id || "" }),
      el("td", { text: r.schedule_type || "" }),
      statusCell(r.status),
      el("td", { text: r.message_count === undefined ? "" : String(r.message_count) }),
      el("td", { text: r.finished_at || "" }),
      el("td", { class: "error", text: r.error || "" }),
    )));
}

async function refresh() {
  await refreshReady();
  if (!signedIn) return;
  try {
    await Promise.all([refreshJobs(), refreshHistory(), refreshUsers(), refreshDigests()]);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    flash(`Could not refresh: ${e.message}`);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#sign-in-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    signIn($("#token").value);
  });
  $("#sign-out").addEventListener("click", () => signOut(""));
  $("#history-close").addEventListener("click", () => { historyJob = null; refresh(); });
  refreshReady();
  setInterval(refreshReady, 2000);
  if (token !== null) signIn(token);
});
