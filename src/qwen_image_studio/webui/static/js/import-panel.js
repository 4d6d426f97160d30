// The dataset tab's import: drop images, captions or zips (or pick them), name the new dataset, upload with
// progress, then show what was imported and offer to use the new dataset TOML in the form and the gallery.
// Dropped folders keep their relative paths, so a "control" folder makes an edit dataset.
import { $, el } from "./dom.js";
import { currentLanguage, localText, t, tm } from "./i18n.js";

const SHOWN = 12; // chosen files listed by name; the rest are counted
const SKIPPED_SHOWN = 50;

function sizeText(bytes) {
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
  if (bytes >= 2 ** 20) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  return `${Math.max(1, Math.round(bytes / 1024))} KiB`;
}

/** Every file of a dropped folder entry, with its path below the drop ("shoot/control/a_0.png"). */
async function entryFiles(entry, prefix = "") {
  if (entry.isFile) {
    const file = await new Promise((ok, fail) => entry.file(ok, fail));
    return [{ file, path: prefix + file.name }];
  }
  if (!entry.isDirectory) return [];
  const reader = entry.createReader();
  const out = [];
  for (;;) { // readEntries gives at most 100 at a time
    const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
    if (!batch.length) break;
    for (const child of batch) out.push(...await entryFiles(child, `${prefix}${entry.name}/`));
  }
  return out;
}

async function droppedFiles(transfer) {
  const entries = [...(transfer.items || [])]
    .map((item) => (item.kind === "file" && item.webkitGetAsEntry ? item.webkitGetAsEntry() : null));
  if (entries.length && entries.every(Boolean)) {
    const lists = await Promise.all(entries.map((entry) => entryFiles(entry)));
    return lists.flat();
  }
  return [...transfer.files].map((file) => ({ file, path: file.name }));
}

export class ImportPanel {
  /** `ctx`: {useDataset(path), loadGallery()}. */
  constructor(ctx) {
    this.ctx = ctx;
    this.files = []; // {file, path}
    this.result = null; // the last answer (re-rendered on a language switch)
    this.busy = null; // {loaded, total} while uploading, "working" once the upload is sent
    const zone = $("imp-drop");
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => this.onDrop(e));
    zone.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("imp-files").click(); }
    });
    $("imp-files").addEventListener("change", (e) => {
      this.add([...e.target.files].map((file) => ({ file, path: file.webkitRelativePath || file.name })));
      e.target.value = "";
    });
    $("imp-start").addEventListener("click", () => this.start());
    $("imp-clear").addEventListener("click", () => { this.files = []; this.result = null; this.render(); });
    $("imp-use").addEventListener("click", () => this.use());
    new MutationObserver(() => this.render())
      .observe(document.documentElement, { attributes: true, attributeFilter: ["lang"] });
    this.render();
  }

  async onDrop(e) {
    e.preventDefault();
    $("imp-drop").classList.remove("over");
    if (!e.dataTransfer) return;
    this.add(await droppedFiles(e.dataTransfer));
  }

  add(list) {
    const known = new Set(this.files.map((f) => f.path));
    for (const item of list) if (!known.has(item.path)) { this.files.push(item); known.add(item.path); }
    this.result = null;
    this.render();
  }

  render() {
    const chosen = $("imp-chosen");
    chosen.replaceChildren();
    if (this.files.length) {
      const size = this.files.reduce((n, f) => n + f.file.size, 0);
      chosen.append(el("p", { class: "imp-count" }, t("imp.chosen", { count: this.files.length, size: sizeText(size) })));
      const list = el("ul", { class: "files" });
      for (const f of this.files.slice(0, SHOWN)) list.append(el("li", {}, f.path));
      if (this.files.length > SHOWN) list.append(el("li", {}, t("imp.more", { count: this.files.length - SHOWN })));
      chosen.append(list);
    }
    const running = this.busy !== null;
    $("imp-start").disabled = running;
    $("imp-clear").disabled = running;
    $("imp-drop").setAttribute("aria-busy", running ? "true" : "false");
    const bar = $("imp-progress");
    bar.hidden = !running;
    if (running && this.busy !== "working" && this.busy.total) bar.value = (100 * this.busy.loaded) / this.busy.total;
    else if (running) bar.removeAttribute("value"); // indeterminate while the server writes
    this.renderStatus();
  }

  renderStatus() {
    const box = $("imp-status");
    const skipped = $("imp-skipped");
    skipped.replaceChildren();
    $("imp-use").hidden = !(this.result && this.result.ok);
    if (this.busy === "working") { this.status(box, t("imp.working"), ""); return; }
    if (this.busy) {
      const percent = this.busy.total ? Math.floor((100 * this.busy.loaded) / this.busy.total) : 0;
      this.status(box, t("imp.uploading", { percent }), "");
      return;
    }
    const r = this.result;
    if (!r) { this.status(box, "", ""); return; }
    if (r.message) { this.status(box, r.message(), r.ok ? "ok" : "problem"); }
    if (!r.ok || !r.data) return;
    const d = r.data;
    if (d.missing_controls && d.missing_controls.length) {
      skipped.append(el("p", { class: "problem" }, t("imp.missing_controls", { names: d.missing_controls.join(", ") })));
    }
    if (d.skipped.length) {
      skipped.append(el("p", { class: "imp-skipped-head" }, t("imp.skipped", { count: d.skipped.length })));
      const list = el("ul", { class: "files" });
      for (const s of d.skipped.slice(0, SKIPPED_SHOWN)) {
        const li = el("li", {});
        li.append(el("code", {}, s.file), document.createTextNode(` — ${localText(s.reason, s.reason_i18n)}`));
        list.append(li);
      }
      if (d.skipped.length > SKIPPED_SHOWN) list.append(el("li", {}, t("imp.more", { count: d.skipped.length - SKIPPED_SHOWN })));
      skipped.append(list);
    }
  }

  status(box, text, cls) {
    box.textContent = text;
    box.className = `imp-status ${cls}`;
  }

  start() {
    const name = $("imp-name").value.trim();
    if (!this.files.length) { this.result = { ok: false, message: () => t("imp.nothing") }; this.render(); return; }
    if (!name) { this.result = { ok: false, message: () => t("imp.no_name") }; this.render(); $("imp-name").focus(); return; }
    const form = new FormData();
    form.append("name", name);
    form.append("resolution", $("imp-resolution").value.trim());
    for (const f of this.files) form.append("files", f.file, f.path);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/datasets/import");
    xhr.setRequestHeader("X-Studio-Upload", "1");
    xhr.setRequestHeader("X-Studio-Lang", currentLanguage());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (e) => {
      this.busy = { loaded: e.loaded, total: e.lengthComputable ? e.total : 0 };
      this.render();
    });
    xhr.upload.addEventListener("load", () => { this.busy = "working"; this.render(); });
    xhr.addEventListener("load", () => this.done(xhr));
    xhr.addEventListener("error", () => this.failed());
    xhr.addEventListener("abort", () => this.failed());
    this.busy = { loaded: 0, total: 0 };
    this.result = null;
    this.render();
    xhr.send(form);
  }

  done(xhr) {
    this.busy = null;
    const data = xhr.response || {};
    if (xhr.status >= 200 && xhr.status < 300) {
      this.result = { ok: true, data, message: () => localText(data.message, data.message_i18n) };
      this.files = [];
    } else {
      const text = () => (data.error_i18n ? tm(data.error_i18n) : data.error || t("imp.failed", { status: xhr.status }));
      this.result = { ok: false, data: null, message: text };
    }
    this.render();
  }

  failed() {
    this.busy = null;
    this.result = { ok: false, message: () => t("imp.network") };
    this.render();
  }

  use() {
    if (!this.result || !this.result.ok) return;
    const path = this.result.data.toml;
    this.ctx.useDataset(path);
    this.ctx.loadGallery();
    $("gallery-title").scrollIntoView({ behavior: "smooth", block: "start" });
  }
}
