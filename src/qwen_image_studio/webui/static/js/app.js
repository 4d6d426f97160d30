// The studio page: builds the form from /api/schema and wires the configuration toolbar to the JSON API;
// the dataset tab, the jobs tab (live over a WebSocket) and the helpers beside the form get a small context.
import { api, configUrl, upload } from "./api.js";
import { loadDraft, saveDraft } from "./draft.js";
import { DatasetPanel } from "./dataset-panel.js";
import { GalleryPanel } from "./gallery-panel.js";
import { CaptionPanel } from "./caption-panel.js";
import { GeneratePanel } from "./generate-panel.js";
import { ImportPanel } from "./import-panel.js";
import { debounce, el } from "./dom.js";
import { applyTranslations, currentLanguage, hasKey, localText, setLanguage, t, tm } from "./i18n.js";
import { buildFormModel, checkValue, missingFor } from "./form-model.js";
import { FormView } from "./form-view.js";
import { JobsPanel } from "./jobs-panel.js";
import { ToolsPanel } from "./tools-panel.js";

const $ = (id) => document.getElementById(id);
const VALIDATE_DELAY_MS = 300;
const STATUS_POLL_MS = 2000;
const TABS = ["config", "dataset", "jobs", "generate"];
const TAB_KEY = "studio_tab";

const state = {
  model: null, view: null, current: null, dirty: false, configs: [],
  server: { problems: [], needs: [], warnings: [] }, staleFields: new Set(), commands: null,
  seq: 0, timer: null, status: null, statusTimer: null, message: null,
  roles: {}, jobKinds: {}, jobs: null, dataset: null, tools: null, captions: null, captionPreview: 0,
  panels: [], generate: null,
};

// ---- messages ---------------------------------------------------------------------------------

/** A problem the server found ({field, message, message_i18n}, or a plain text) in the page's language. */
function problemText(p) {
  return typeof p === "string" ? p : localText(p.message, p.message_i18n);
}

// Refused values ("invalid", "not_ready") worded for the action that was refused; Save keeps err.invalid.
const REFUSED_HEADS = { run: "err.run_refused", command: "err.command_refused" };
// Actions whose problems the page lists elsewhere (Save: the form's summary; Run: the job area), once.
const LISTED_ELSEWHERE = new Set(["save", "run"]);

/** Problems without repeats: one per (field, message). */
function uniqueProblems(problems) {
  const seen = new Set();
  return (problems || []).filter((p) => {
    const id = typeof p === "string" ? `\n${p}` : `${p.field || ""}\n${p.message}`;
    return !seen.has(id) && seen.add(id);
  });
}

/** A readable error for a failed API answer: the translated headline, then the server's detail; `action`
 * ("save", "run", "command" or none) words the headline of refused values and says whether the problems
 * are listed here or elsewhere on the page. */
function errorText(res, action = "") {
  const code = res.data.code || "other";
  const refused = code === "invalid" || code === "not_ready";
  const key = refused && REFUSED_HEADS[action] ? REFUSED_HEADS[action] : `err.${code}`;
  const head = hasKey(key) ? t(key) : t("err.other");
  const lines = [head];
  const detail = localText(res.data.error, res.data.error_i18n);
  if (detail && detail !== head && !refused) lines.push(detail); // a refusal's detail is its problems
  if (!(refused && LISTED_ELSEWHERE.has(action))) {
    for (const p of uniqueProblems(res.data.problems)) lines.push(problemText(p));
  }
  return lines.join("\n");
}

function say(text, level = "ok") {
  const box = $("status");
  box.textContent = text;
  box.className = `status ${level}`;
  box.hidden = false;
  clearTimeout(state.statusTimer);
  if (level === "ok") state.statusTimer = setTimeout(() => { box.hidden = true; }, 6000);
}

function markDirty(dirty = true) {
  state.dirty = dirty;
  $("dirty-flag").hidden = !dirty;
  keepDraft();
}

/** Remember the form (values, name, selection) so that a reload restores it. */
function keepDraftNow() {
  if (!state.view) return;
  saveDraft({ values: state.view.read(), current: state.current, name: $("config-name").value, dirty: state.dirty });
}
const keepDraft = debounce(keepDraftNow, 250);

// ---- tabs -------------------------------------------------------------------------------------

function switchTab(name) {
  const tab = TABS.includes(name) ? name : TABS[0];
  for (const id of TABS) {
    $(`tab-${id}`).hidden = id !== tab;
    const button = $(`tab-btn-${id}`);
    button.setAttribute("aria-selected", id === tab ? "true" : "false");
    button.classList.toggle("active", id === tab);
  }
  try { localStorage.setItem(TAB_KEY, tab); } catch (e) { /* storage off */ }
  if (location.hash !== `#${tab}`) history.replaceState(null, "", `#${tab}`);
  if (tab === "dataset" && state.dataset) state.dataset.sync();
  if (tab === "jobs" && state.jobs) state.jobs.view.chart.resize();
}

function initialTab() {
  const hash = location.hash.replace("#", "");
  if (TABS.includes(hash)) return hash;
  try { return localStorage.getItem(TAB_KEY) || TABS[0]; } catch (e) { return TABS[0]; }
}

// ---- values by role (the page names no parameter; the schema says which field plays which role) -----

function roleValue(role) {
  const name = state.roles[role];
  return name && state.view ? state.view.read()[name] : null;
}

function setRole(role, value) {
  const name = state.roles[role];
  if (!name) return;
  state.view.write({ [name]: value });
  onFieldInput(name);
}

// ---- validation -------------------------------------------------------------------------------

function checkedStages() {
  const choice = $("check-stages").value;
  return state.jobKinds[choice] || (choice ? [choice] : []); // each job kind's stages, from the server
}

/** Client checks (instant, translated) merged with the server's answer (authoritative, per field). */
function showProblems() {
  if (!state.view) return;
  const values = state.view.read();
  const byField = {};
  const add = (name, item) => {
    const list = (byField[name] = byField[name] || []);
    if (!list.some((p) => p.text === item.text)) list.push(item); // each problem once
  };
  const clientErrors = new Set();
  for (const field of state.model.fields) {
    const problem = checkValue(field, values[field.name]);
    if (problem) { clientErrors.add(field.name); add(field.name, { text: t(problem.key, problem.vars), level: "error" }); }
  }
  const top = [];
  for (const p of uniqueProblems(state.server.problems)) {
    if (!p.field || !state.model.byName[p.field]) { if (!top.includes(problemText(p))) top.push(problemText(p)); }
    else if (!clientErrors.has(p.field) && !state.staleFields.has(p.field)) add(p.field, { text: problemText(p), level: "error" });
  }
  const clientNeeds = missingFor(state.model, values, checkedStages(), state.view.edit);
  const needFields = new Set(clientNeeds.map((n) => n.field));
  for (const n of clientNeeds) add(n.field, { text: t(n.key, n.vars), level: "need" });
  for (const p of state.server.needs) {
    if (!needFields.has(p.field) && !state.staleFields.has(p.field) && state.model.byName[p.field]) {
      add(p.field, { text: problemText(p), level: "need" });
    }
  }
  for (const p of state.server.warnings || []) {
    if (!state.staleFields.has(p.field) && state.model.byName[p.field]) add(p.field, { text: problemText(p), level: "warn" });
  }
  state.view.showProblems(byField);
  renderSummary(top, byField);
}

function renderSummary(top, byField) {
  const box = $("form-summary");
  box.replaceChildren();
  const errors = [...top.map((text) => ({ text }))];
  const needs = [];
  const warnings = [];
  for (const field of state.model.fields) {
    for (const p of byField[field.name] || []) {
      ({ error: errors, need: needs, warn: warnings })[p.level].push({ text: p.text, field: field.name });
    }
  }
  const block = (title, items, cls) => {
    const section = document.createElement("div");
    section.className = cls;
    const h = document.createElement("p");
    h.textContent = title;
    const ul = document.createElement("ul");
    for (const item of items) {
      const li = document.createElement("li");
      li.textContent = item.text;
      if (item.field) {
        li.tabIndex = 0;
        li.className = "goto";
        li.addEventListener("click", () => focusField(item.field));
        li.addEventListener("keydown", (e) => { if (e.key === "Enter") focusField(item.field); });
      }
      ul.append(li);
    }
    section.append(h, ul);
    box.append(section);
  };
  if (errors.length) block(t("form.problems"), errors, "summary-errors");
  if (needs.length) block(t("form.needs"), needs, "summary-needs");
  if (warnings.length) block(t("form.warnings"), warnings, "summary-warnings");
  if (!errors.length && !needs.length) {
    const ok = document.createElement("p");
    ok.className = "summary-ok";
    ok.textContent = t("form.valid");
    box.append(ok);
  }
}

function focusField(name) {
  const view = [state.view, ...(state.panels || [])].find((v) => v && v.inputs[name]); // a tab's own form too
  if (!view) return;
  const input = view.inputs[name];
  const panel = input.closest(".tab-panel"); // a placed section lives in another tab
  switchTab(panel ? panel.id.replace(/^tab-/, "") : "config");
  view.reveal(name);
  input.focus();
  input.scrollIntoView({ block: "center", behavior: "smooth" });
}

function scheduleValidate() {
  clearTimeout(state.timer);
  state.timer = setTimeout(validateNow, VALIDATE_DELAY_MS);
}

/** Ask the server (validation, then the command lines when the values are valid). */
async function validateNow() {
  clearTimeout(state.timer);
  const seq = ++state.seq;
  const params = state.view.read();
  const res = await api("POST", "/api/validate", { params, stage: checkedStages() });
  if (seq !== state.seq) return;
  if (!res.ok) { say(errorText(res), "error"); return; }
  state.server = { problems: res.data.problems, needs: res.data.stage_problems, warnings: res.data.warnings || [] };
  state.staleFields.clear();
  showProblems();
  if (state.tools) state.tools.refreshVram();
  if (res.data.problems.length) {
    state.commands = null;
  } else {
    const argv = await api("POST", "/api/config/argv", { params });
    if (seq !== state.seq) return;
    state.commands = argv.ok ? argv.data.commands : null;
  }
  renderCommands();
}

function onFieldInput(name, type) {
  markDirty();
  if (state.dataset) state.dataset.sync();
  if (name === state.roles.logdir && type !== "input" && state.tools) state.tools.pointBoard();
  state.staleFields.add(name);
  if (state.model.editSwitch && name === state.model.editSwitch.field) state.view.syncMode();
  syncModeControls();
  showProblems();
  scheduleValidate();
}

// ---- command lines ----------------------------------------------------------------------------

function renderCommands() {
  const box = $("commands");
  box.replaceChildren();
  if (!state.commands) {
    const p = document.createElement("p");
    p.className = "hint";
    p.textContent = t("cmd.invalid");
    box.append(p);
    return;
  }
  for (const cmd of state.commands) {
    const wrap = document.createElement("div");
    wrap.className = "command";
    const head = document.createElement("div");
    head.className = "command-head";
    const title = document.createElement("h3");
    title.textContent = t(`stage.${cmd.stage}`);
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "small";
    copy.textContent = t("cmd.copy");
    copy.addEventListener("click", async () => {
      try { await navigator.clipboard.writeText(cmd.command); copy.textContent = t("cmd.copied"); } catch (e) { /* no clipboard */ }
      setTimeout(() => { copy.textContent = t("cmd.copy"); }, 1500);
    });
    head.append(title, copy);
    const pre = document.createElement("pre");
    pre.textContent = cmd.command;
    wrap.append(head, pre);
    box.append(wrap);
  }
}

// ---- mode -------------------------------------------------------------------------------------

function syncModeControls() {
  const sw = $("edit-switch");
  sw.disabled = !state.model || !state.model.editSwitch;
  sw.checked = Boolean(state.view && state.view.edit);
  for (const panel of state.panels || []) panel.syncMode();
  $("mode-hint").textContent = sw.checked ? t("mode.hint_edit") : t("mode.hint_t2i");
}

// ---- saved configurations ---------------------------------------------------------------------

async function refreshList() {
  const res = await api("GET", "/api/configs");
  if (!res.ok) { say(errorText(res), "error"); return; }
  state.configs = res.data.configs;
  renderList();
  renderGuide();
}

function renderList() {
  const select = $("config-list");
  select.replaceChildren();
  const none = document.createElement("option");
  none.value = "";
  none.textContent = t("toolbar.none");
  select.append(none);
  for (const c of state.configs) {
    const option = document.createElement("option");
    option.value = c.name;
    option.textContent = c.name;
    select.append(option);
  }
  select.value = state.current && state.configs.some((c) => c.name === state.current) ? state.current : "";
  const exportLink = $("btn-export");
  if (state.current) {
    exportLink.href = configUrl(state.current, "/export");
    exportLink.setAttribute("download", `${state.current}.json`);
    exportLink.setAttribute("aria-disabled", "false");
  } else {
    exportLink.removeAttribute("href");
    exportLink.removeAttribute("download");
    exportLink.setAttribute("aria-disabled", "true");
  }
}

async function writeValues(params) {
  const defaults = await api("GET", "/api/config/defaults");
  if (defaults.ok) state.view.write(defaults.data.params);
  state.view.write(params);
  syncModeControls();
}

async function loadConfig(name) {
  if (state.dirty && !window.confirm(t("confirm.discard"))) { renderList(); return; }
  const res = await api("GET", configUrl(name));
  if (!res.ok) { say(errorText(res), "error"); await refreshList(); return; }
  await writeValues(res.data.params);
  state.current = name;
  $("config-name").value = name;
  markDirty(false);
  renderList();
  say(res.data.problems.length ? t("msg.load_problems", { name }) : t("msg.loaded", { name }),
    res.data.problems.length ? "error" : "ok");
  if (state.dataset) state.dataset.sync();
  if (state.tools) state.tools.pointBoard();
  await validateNow();
}

async function saveConfig() {
  const name = $("config-name").value.trim();
  if (!name) { say(t("err.no_name"), "error"); $("config-name").focus(); return; }
  const params = state.view.read();
  let res = await api("POST", "/api/configs", { name, params });
  if (res.status === 409 && window.confirm(t("confirm.overwrite", { name }))) {
    res = await api("POST", "/api/configs", { name, params, overwrite: true });
  }
  if (res.status === 409) return;
  if (!res.ok) {
    if (res.data.problems) { state.server.problems = res.data.problems; state.staleFields.clear(); showProblems(); }
    say(errorText(res, "save"), "error");
    return;
  }
  state.current = res.data.config.name;
  $("config-name").value = state.current;
  markDirty(false);
  await refreshList();
  const file = res.data.file;
  say(file ? t("msg.saved_file", { name: state.current, file }) : t("msg.saved", { name: state.current }));
}

async function renameConfig() {
  if (!state.current) { say(t("err.no_selection"), "error"); return; }
  const next = window.prompt(t("prompt.rename", { name: state.current }), state.current);
  if (next === null || !next.trim() || next.trim() === state.current) return;
  const res = await api("POST", configUrl(state.current, "/rename"), { new_name: next });
  if (!res.ok) { say(errorText(res), "error"); return; }
  state.current = res.data.config.name;
  $("config-name").value = state.current;
  keepDraft();
  await refreshList();
  say(t("msg.renamed", { name: state.current }));
}

async function deleteConfig() {
  if (!state.current) { say(t("err.no_selection"), "error"); return; }
  const name = state.current;
  if (!window.confirm(t("confirm.delete", { name }))) return;
  const res = await api("DELETE", configUrl(name));
  if (!res.ok) { say(errorText(res), "error"); return; }
  state.current = null;
  $("config-name").value = "";
  markDirty();
  await refreshList();
  say(t("msg.deleted", { name }));
}

async function resetDefaults() {
  if (state.dirty && !window.confirm(t("confirm.discard"))) return;
  const res = await api("GET", "/api/config/defaults");
  if (!res.ok) { say(errorText(res), "error"); return; }
  state.view.write(res.data.params);
  state.current = null; // the defaults are no saved configuration: Save asks for a new name
  $("config-name").value = "";
  syncModeControls();
  markDirty();
  renderList();
  say(t("msg.reset"));
  await validateNow();
}

function wireToolbar() {
  $("config-list").addEventListener("change", (e) => { if (e.target.value) loadConfig(e.target.value); });
  $("btn-save").addEventListener("click", saveConfig);
  $("config-name").addEventListener("keydown", (e) => { if (e.key === "Enter") saveConfig(); });
  $("btn-rename").addEventListener("click", renameConfig);
  $("btn-delete").addEventListener("click", deleteConfig);
  $("btn-reset").addEventListener("click", resetDefaults);
  $("btn-export").addEventListener("click", (e) => {
    if (!state.current) { e.preventDefault(); say(t("err.no_selection"), "error"); }
  });
}

// ---- import -----------------------------------------------------------------------------------

function wireImport() {
  const dialog = $("import-dialog");
  const error = $("import-error");
  $("btn-import").addEventListener("click", () => { error.textContent = ""; dialog.showModal(); });
  $("import-upload").addEventListener("click", async () => {
    const file = $("import-file").files[0];
    if (!file) { error.textContent = t("err.no_file"); return; }
    const form = new FormData();
    form.append("file", file);
    form.append("name", $("import-name").value.trim());
    form.append("overwrite", $("import-overwrite").checked ? "1" : "0");
    const res = await upload("/api/configs/import", form);
    if (!res.ok) { error.textContent = errorText(res); return; }
    dialog.close();
    state.dirty = false;
    await refreshList();
    await loadConfig(res.data.config.name);
    say(t("msg.imported", { name: res.data.config.name }));
  });
  $("import-cli-load").addEventListener("click", async () => {
    const res = await api("POST", "/api/config/from-command", { text: $("import-cli").value });
    if (!res.ok) { error.textContent = errorText(res, "command"); return; }
    dialog.close();
    await writeValues(res.data.params);
    state.current = null;
    $("config-name").value = "";
    markDirty();
    renderList();
    say(t("msg.imported_cli", { stage: t(`stage.${res.data.stage}`) }));
    await validateNow();
  });
}

// ---- first run: the guide and the demo ---------------------------------------------------------

const GUIDE_KEY = "studio_guide_hidden";
const DEMO_LANDING = "demo-t2i";

function guideHidden() {
  try { return localStorage.getItem(GUIDE_KEY) === "1"; } catch (e) { return false; }
}

function renderGuide() {
  const hidden = guideHidden();
  $("guide").hidden = hidden;
  $("guide-show").hidden = !hidden;
  const names = new Set(state.configs.map((c) => c.name));
  let any = false;
  for (const button of document.querySelectorAll("[data-demo]")) {
    button.hidden = !names.has(button.dataset.demo);
    any = any || !button.hidden;
  }
  $("guide-demo").hidden = !any;
}

function showGuide(show) {
  try { localStorage.setItem(GUIDE_KEY, show ? "0" : "1"); } catch (e) { /* storage off */ }
  renderGuide();
}

/** The guide's steps lead to the model fields, the Dataset tab and the Run button. */
function followGuide(step) {
  if (step === "models") {
    switchTab("config");
    const section = document.querySelector('#config-form details[data-group="models"]');
    if (section) { section.open = true; section.scrollIntoView({ block: "start", behavior: "smooth" }); }
    const first = state.model && state.model.sections.find((s) => s.name === "models");
    if (first && first.fields.length) state.view.inputs[first.fields[0].name].focus({ preventScroll: true });
  } else if (step === "dataset") {
    switchTab("dataset");
    $("dataset-path").focus();
  } else {
    switchTab("jobs");
    document.querySelector("[data-run='pipeline']").focus();
  }
}

async function openDemo(name) {
  if (!state.configs.some((c) => c.name === name)) return;
  if (state.current === name && !state.dirty) { say(t("msg.demo_opened", { name })); return; }
  await loadConfig(name);
  if (state.current === name) say(t("msg.demo_opened", { name }));
}

/** A first visit (nothing restored, nothing chosen) opens on the demo's text-to-image configuration. */
async function landOnDemo() {
  if (state.landed || state.current || state.dirty) return;
  if (!state.configs.some((c) => c.name === DEMO_LANDING)) return;
  state.landed = true;
  await loadConfig(DEMO_LANDING);
  if (state.current === DEMO_LANDING) say(t("msg.demo_opened", { name: DEMO_LANDING }));
}

function wireGuide() {
  $("guide-hide").addEventListener("click", () => showGuide(false));
  $("guide-show").addEventListener("click", () => showGuide(true));
  for (const button of document.querySelectorAll("[data-guide]")) {
    button.addEventListener("click", () => followGuide(button.dataset.guide));
  }
  for (const button of document.querySelectorAll("[data-demo]")) {
    button.addEventListener("click", () => openDemo(button.dataset.demo));
  }
}

// ---- status and notices -----------------------------------------------------------------------

function renderNotices() {
  const box = $("notices");
  box.replaceChildren();
  const s = state.status;
  if (!s) return;
  $("workspace-path").textContent = s.workspace;
  const allowed = s.allowed_dirs || [];
  $("allowed-dirs").textContent = allowed.join(", ");
  $("allowed-dirs-box").hidden = allowed.length === 0;
  for (const hint of document.querySelectorAll(".paths-hint")) hint.textContent = t("paths.hint", { path: s.workspace });
  const add = (text, level) => {
    const p = document.createElement("p");
    p.className = `notice ${level}`;
    p.textContent = text;
    box.append(p);
  };
  if (s.demo.state === "creating") add(t("demo.creating"), "info");
  if (s.demo.state === "failed") add(`${t("demo.failed")}\n${s.demo.message}`, "error");
  if (s.demo.state === "ready" && state.demoWasCreating) add(t("demo.ready"), "ok");
  for (const note of s.notices_i18n || s.notices) add(tm(note), "error");
}

async function pollStatus() {
  const res = await api("GET", "/api/status");
  if (res.ok) {
    const before = state.status ? state.status.demo.state : null;
    state.status = res.data;
    if (before === "creating" && res.data.demo.state !== "creating") {
      state.demoWasCreating = true;
      await refreshList();
      if (state.view && !state.restored) await landOnDemo();
    }
    renderNotices();
  }
  if (!res.ok || res.data.demo.state === "creating") setTimeout(pollStatus, STATUS_POLL_MS);
}

// ---- language ---------------------------------------------------------------------------------

function switchLanguage(lang) {
  setLanguage(lang);
  if (state.view) state.view.render();
  syncModeControls();
  renderList();
  showProblems();
  renderCommands();
  renderNotices();
  if (state.jobs) state.jobs.retranslate();
  if (state.dataset) state.dataset.render();
  if (state.gallery) state.gallery.render();
  if (state.captions) state.captions.render();
  if (state.generate) state.generate.render();
  if (state.tools) state.tools.retranslate();
}

// ---- the other panels -------------------------------------------------------------------------

/** Problems the server found when a job was to start: shown next to their fields. */
function serverProblems(problems, code) {
  if (code === "not_ready") state.server.needs = problems;
  else state.server.problems = problems;
  state.staleFields.clear();
  showProblems();
}

/** A refused job start: its problems next to their fields and listed in `box`, each a link to its field. */
function showRefusal(box, res) {
  if (res.data.problems) serverProblems(res.data.problems, res.data.code);
  const level = res.data.code === "not_ready" ? "need" : "error";
  for (const view of state.panels) { // a tab's own form shows its fields' problems beside them
    const byField = {};
    for (const p of res.data.problems || []) {
      if (p.field && view.model.byName[p.field]) (byField[p.field] = byField[p.field] || []).push({ text: problemText(p), level });
    }
    view.showProblems(byField);
  }
  box.append(el("p", { class: "problem" }, errorText(res, "run")));
  for (const p of res.data.problems || []) {
    const item = el("p", { class: p.field ? "problem goto" : "problem", tabindex: p.field ? "0" : null }, problemText(p));
    if (p.field) item.addEventListener("click", () => focusField(p.field));
    box.append(item);
  }
}

function applyValues(values, message) {
  state.view.write(values);
  syncModeControls();
  markDirty();
  showProblems();
  if (message) say(message);
  validateNow();
}

function startPanels() {
  const common = { say, errorText, problemText, focusField };
  state.jobs = new JobsPanel({
    ...common,
    errorText: (res) => errorText(res, "run"), // the job area lists the problems itself
    readValues: () => state.view.read(),
    currentName: () => (state.dirty ? null : state.current),
    serverProblems,
  });
  state.dataset = new DatasetPanel({
    ...common,
    datasetValue: () => roleValue("dataset"),
    isEdit: () => Boolean(state.view && state.view.edit),
    formValues: () => (state.view ? state.view.read() : null), // the server reads what the report needs
    useDataset: (path) => setRole("dataset", path),
  });
  state.gallery = new GalleryPanel({ ...common, datasetValue: () => roleValue("dataset") });
  state.captions = new CaptionPanel({
    ...common,
    errorText: (res) => errorText(res, "run"),
    readValues: () => state.view.read(),
    currentName: () => (state.dirty ? null : state.current),
    datasetValue: () => roleValue("dataset"),
    serverProblems,
    showRefusal,
    watchJob: (job) => { state.jobs.watch(job); switchTab("jobs"); },
    captionsWritten: () => state.gallery.reload(),
  }, state.captionPreview);
  state.jobs.onJob((job) => state.captions.onJob(job));
  if (state.panels.length) {
    state.generate = new GeneratePanel({
      ...common,
      view: state.panels[0],
      roles: state.roles,
      errorText: (res) => errorText(res, "run"),
      mainValues: () => state.view.read(),
      currentName: () => (state.dirty ? null : state.current),
      serverProblems,
      showRefusal,
      watchJob: (job) => { state.jobs.watch(job); switchTab("jobs"); },
    });
    state.jobs.onJob((job) => state.generate.onJob(job));
  }
  state.importer = new ImportPanel({ useDataset: (path) => { setRole("dataset", path); state.dataset.sync(); }, loadGallery: () => $("gal-load").click() });
  state.tools = new ToolsPanel({
    readValues: () => state.view.read(),
    applyValues,
    logdirValue: () => roleValue("logdir"),
  });
  state.jobs.connect();
  state.tools.start();
}

/** Put back the edits of the last visit (a reload mid-run loses nothing). */
async function restoreDraft() {
  const draft = loadDraft();
  if (!draft) return false;
  state.view.write(draft.values);
  state.current = draft.current && state.configs.some((c) => c.name === draft.current) ? draft.current : null;
  $("config-name").value = draft.name || "";
  syncModeControls();
  markDirty(Boolean(draft.dirty));
  renderList();
  if (draft.dirty) say(t("draft.restored"));
  return true;
}

// ---- start ------------------------------------------------------------------------------------

async function start() {
  applyTranslations(document);
  $("lang-select").value = currentLanguage();
  $("lang-select").addEventListener("change", (e) => switchLanguage(e.target.value));
  for (const button of document.querySelectorAll("[data-tab]")) {
    button.addEventListener("click", () => switchTab(button.dataset.tab));
  }
  switchTab(initialTab());
  wireToolbar();
  wireImport();
  wireGuide();
  pollStatus();
  import("./gpu-chip.js").then((m) => m.startGpuChip());  // the header's live GPU panel
  const schema = await api("GET", "/api/schema");
  if (!schema.ok) {
    $("config-form").replaceChildren();
    say(`${t("form.load_failed")}\n${errorText(schema)}`, "error");
    return;
  }
  const panels = {}; // groups a tab shows in values of its own (data-form-panel="GROUP")
  for (const box of document.querySelectorAll("[data-form-panel]")) panels[box.dataset.formPanel] = box;
  state.model = buildFormModel(schema.data, { exclude: Object.keys(panels) });
  state.panels = Object.entries(panels).map(([group, box]) => {
    const view = new FormView(box, buildFormModel(schema.data, { only: group }), () => state.generate && state.generate.remember(), {}, "gen-");
    view.editOf = () => Boolean(state.view && state.view.edit);
    return view;
  });
  state.roles = schema.data["x-roles"] || {};
  state.jobKinds = schema.data["x-job-kinds"] || {};
  state.captionPreview = schema.data["x-caption-preview"] || 0;
  const placed = {}; // form sections shown elsewhere on the page (data-section-slot="GROUP")
  for (const slot of document.querySelectorAll("[data-section-slot]")) placed[slot.dataset.sectionSlot] = slot;
  state.view = new FormView($("config-form"), state.model, onFieldInput, placed);
  state.view.render();
  const defaults = await api("GET", "/api/config/defaults");
  if (defaults.ok) state.view.write(defaults.data.params);
  $("edit-switch").addEventListener("change", (e) => {
    state.view.setEdit(e.target.checked);
    onFieldInput(state.model.editSwitch.field);
  });
  $("check-stages").addEventListener("change", () => { showProblems(); validateNow(); });
  syncModeControls();
  await refreshList();
  startPanels();
  state.restored = await restoreDraft();
  if (!state.restored) await landOnDemo();
  state.dataset.sync();
  if (state.generate) await state.generate.start(defaults.ok ? defaults.data.params : null);
  state.tools.baseline();
  await validateNow();
  document.body.dataset.ready = "1";
}

start();
