// The Generate tab: the schema's generation section in values of its own (kept in this browser, not in
// the saved configuration), started with the Configuration tab's models and memory options. Each
// "Generate" is a job in the studio's queue, run by the generation worker that keeps the models loaded;
// results stay listed with their settings, and "Reuse these settings" puts them back into the panel.
// Parameters are reached by role (x-roles) only.
import { api } from "./api.js";
import { $, el } from "./dom.js";
import { t, localText } from "./i18n.js";

const KIND = "generate";
const FINAL = ["done", "failed", "stopped", "lost"];
const STORE_KEY = "studio_generate_values";
const SHOWN = 12; // the latest generation jobs listed

function stored() {
  try { return JSON.parse(localStorage.getItem(STORE_KEY) || "null"); } catch (e) { return null; }
}

export class GeneratePanel {
  /** `ctx`: {view (a FormView of the generation group), roles, mainValues(), currentName(), serverProblems,
   * problemText, errorText, focusField, showRefusal(box, res), say, watchJob(job)}. */
  constructor(ctx) {
    this.ctx = ctx;
    this.view = ctx.view;
    this.jobs = new Map(); // generation jobs by id (from the live channel)
    this.waiting = new Set(); // jobs this page started and still waits for
    $("gen-run").addEventListener("click", () => this.run());
    $("gen-release").addEventListener("click", () => this.release());
    $("gen-lora-add").addEventListener("click", () => this.addLora());
    $("gen-grid-add").addEventListener("click", () => this.addToGrid());
  }

  async start(defaults) {
    this.view.render();
    if (defaults) this.view.write(defaults);
    const kept = stored();
    if (kept) this.view.write(kept);
    this.view.syncMode();
    await this.loadJobs();
  }

  remember() {
    try { localStorage.setItem(STORE_KEY, JSON.stringify(this.view.read())); } catch (e) { /* storage off */ }
  }

  render() {
    this.view.render();
    this.renderResults();
  }

  params() {
    return { ...this.ctx.mainValues(), ...this.view.read() };
  }

  async run() {
    const box = $("gen-problems");
    box.replaceChildren();
    this.view.showProblems({}); // the last refusal's marks go
    const seedName = this.ctx.roles.seed;
    const count = Math.max(1, Math.min(16, Number($("gen-count").value) || 1));
    if ($("gen-random").checked && seedName) this.view.write({ [seedName]: Math.floor(Math.random() * 2 ** 31) });
    this.remember();
    const base = this.params();
    for (let i = 0; i < count; i += 1) {
      const params = seedName && i ? { ...base, [seedName]: (Number(base[seedName]) || 0) + i } : base;
      const res = await api("POST", "/api/jobs", { kind: KIND, params, config_name: this.ctx.currentName() });
      if (!res.ok) {
        this.ctx.showRefusal(box, res);
        return;
      }
      this.jobs.set(res.data.job.id, res.data.job);
      this.waiting.add(res.data.job.id);
    }
    this.renderResults();
  }

  async release() {
    const res = await api("POST", "/api/jobs/generate/release", {});
    this.ctx.say(res.ok ? localText(res.data.message, res.data.message_i18n) : this.ctx.errorText(res), res.ok ? "info" : "error");
  }

  /** Add a LoRA file (chosen from the finished jobs) to the LoRA list, strength 1 unless one is set. */
  /** The picked LoRA files: one, or every checkpoint of a job. */
  picked() {
    const value = $("gen-lora-pick").value;
    if (!value) return [];
    return value.startsWith("[") ? JSON.parse(value) : [value];
  }

  /** Add the picked files as columns of the compare grid. */
  addToGrid() {
    const name = this.ctx.roles.grid_columns;
    if (!name) return;
    const list = this.view.read()[name] || [];
    this.view.write({ [name]: [...list, ...this.picked().filter((p) => !list.includes(p))] });
    this.remember();
  }

  addLora() {
    const [path] = this.picked().slice(-1);
    const name = this.ctx.roles.lora_list;
    const strengths = this.ctx.roles.lora_strengths;
    if (!path || !name) return;
    const values = this.view.read();
    const list = Array.isArray(values[name]) ? values[name] : [];
    if (list.includes(path)) return;
    const update = { [name]: [...list, path] };
    if (strengths) {
      const m = Array.isArray(values[strengths]) ? values[strengths] : [];
      update[strengths] = [...m, ...Array(Math.max(0, list.length - m.length)).fill(1), 1];
    }
    this.view.write(update);
    this.remember();
  }

  async loadJobs() {
    const res = await api("GET", "/api/jobs");
    if (!res.ok) return;
    const picks = $("gen-lora-pick");
    picks.replaceChildren(el("option", { value: "" }, t("gen.lora_pick")));
    for (const job of res.data.jobs) {
      if (job.kind === KIND) this.jobs.set(job.id, job);
      if (job.status !== "done" || !job.run_dir) continue;
      const details = await api("GET", `/api/jobs/${job.id}`);
      if (!details.ok) continue;
      const files = details.data.job.files.filter((x) => x.kind === "checkpoint");
      const paths = files.map((f) => `${details.data.job.output_folder}/${f.name}`);
      if (paths.length > 1) {
        picks.append(el("option", { value: JSON.stringify(paths) }, t("gen.all_checkpoints", { id: job.id, count: paths.length })));
      }
      files.forEach((f, i) => picks.append(el("option", { value: paths[i] }, `#${job.id} ${f.name}`)));
    }
    await this.renderResults();
  }

  /** A job changed (live channel): follow the generation jobs, refresh the list when one ends. */
  async onJob(job) {
    if (job.kind !== KIND) {
      if (job.status === "done") this.loadJobs(); // a new LoRA may be there to pick
      return;
    }
    const before = this.jobs.get(job.id);
    this.jobs.set(job.id, { ...(before || {}), ...job });
    if (FINAL.includes(job.status)) this.waiting.delete(job.id);
    await this.renderResults();
  }

  async renderResults() {
    const box = $("gen-results");
    const jobs = [...this.jobs.values()].sort((a, b) => b.id - a.id).slice(0, SHOWN);
    const running = jobs.filter((j) => !FINAL.includes(j.status));
    $("gen-status").textContent = running.length
      ? t("gen.running", { count: running.length, id: running[running.length - 1].id })
      : (jobs.length ? "" : t("gen.none"));
    const cards = [];
    for (const job of jobs) {
      const card = el("div", { class: "gen-card", "data-job": job.id, "data-status": job.status });
      card.append(el("p", { class: "meta" }, `#${job.id} · ${t(`status.${job.status}`)}`));
      if (job.status === "done") {
        const res = await api("GET", `/api/jobs/${job.id}`);
        if (res.ok) {
          const full = res.data.job;
          const grids = full.files.filter((x) => x.kind === "grid");
          const shown = grids.length ? grids : full.files.filter((x) => x.kind === "image");
          if (grids.length) card.classList.add("gen-grid");
          for (const f of shown) {
            const src = `/api/jobs/${job.id}/samples/${encodeURIComponent(f.name)}`;
            const link = el("a", { href: src, target: "_blank", rel: "noopener", class: grids.length ? "gen-grid-link" : null });
            link.append(el("img", { src, alt: f.name, loading: "lazy" }));
            card.append(link);
          }
          card.append(el("p", { class: "gen-prompt" }, this.describe(full.params)));
          const reuse = el("button", { type: "button", class: "gen-reuse" }, t("gen.reuse"));
          reuse.addEventListener("click", () => this.reuse(full.params));
          card.append(reuse);
        }
      } else if (job.status === "failed") {
        const failed = (job.stages || []).find((s) => s.status === "failed");
        if (failed) card.append(el("p", { class: "problem" }, localText(failed.reason, failed.reason_i18n)));
      }
      const log = el("button", { type: "button", class: "link" }, t("cap.watch"));
      log.addEventListener("click", () => this.ctx.watchJob(job));
      card.append(log);
      cards.push(card);
    }
    box.replaceChildren(...cards);
  }

  /** The settings of a result in one line: the values of the panel's fields, as the form writes them. */
  describe(params) {
    return this.view.model.fields
      .filter((f) => params[f.name] !== null && params[f.name] !== undefined && params[f.name] !== "" &&
        !(Array.isArray(params[f.name]) && !params[f.name].length))
      .map((f) => `${f.flag} ${Array.isArray(params[f.name]) ? params[f.name].join(" ") : params[f.name]}`)
      .join("  ");
  }

  reuse(params) {
    const values = {};
    for (const f of this.view.model.fields) if (f.name in params) values[f.name] = params[f.name];
    this.view.write(values);
    $("gen-random").checked = false;
    this.remember();
    this.ctx.say(t("gen.reused"));
  }
}
