// The "Run & monitor" tab: start buttons (with the form's values), the job history and the live channel.
import { api } from "./api.js";
import { $, el } from "./dom.js";
import { clock, clockSpan, received } from "./format.js";
import { t } from "./i18n.js";
import { JobView, kindLabel, statusIcon } from "./job-view.js";
import { Live } from "./live.js";

const WATCHED_KEY = "studio_watched_job";

function remembered() {
  try { return Number(localStorage.getItem(WATCHED_KEY)) || null; } catch (e) { return null; }
}

function remember(id) {
  try { localStorage.setItem(WATCHED_KEY, String(id)); } catch (e) { /* storage off */ }
}

export class JobsPanel {
  /** `ctx`: {readValues(), currentName(), serverProblems(list), focusField(name), say(text, level), errorText(res),
   *  problemText(problem)}. */
  constructor(ctx) {
    this.ctx = ctx;
    this.jobs = new Map();
    this.listeners = []; // other panels that follow jobs (see onJob)
    this.view = new JobView({ focusField: ctx.focusField, stop: (job) => this.stop(job) });
    this.live = new Live({ message: (m) => this.onMessage(m), state: (up) => this.onState(up) }, () => this.view.position());
    for (const button of document.querySelectorAll("[data-run]")) {
      button.addEventListener("click", () => this.start(button.dataset.run));
    }
  }

  connect() { this.live.connect(); }

  /** Call `fn(job)` whenever the live channel reports a job. */
  onJob(fn) { this.listeners.push(fn); }

  tell(jobs) { for (const job of jobs) for (const fn of this.listeners) fn(job); }

  onState(up) {
    const chip = $("live-chip");
    chip.hidden = false;
    chip.dataset.up = up ? "1" : "0";
    chip.textContent = up ? `● ${t("live.connected")}` : `○ ${t("live.reconnecting")}`;
  }

  onMessage(m) {
    if (m.type === "jobs") {
      for (const job of m.jobs) this.jobs.set(job.id, received(job));
      this.renderHistory();
      this.tell(m.jobs);
      if (!this.view.job) {
        const wanted = remembered();
        const pick = (wanted && this.jobs.get(wanted)) || m.jobs[0];
        if (pick) this.watch(pick);
      } else if (this.jobs.has(this.view.job.id)) {
        this.view.update(this.jobs.get(this.view.job.id));
      }
    } else if (m.type === "job") {
      this.jobs.set(m.job.id, received(m.job));
      this.view.update(m.job);
      this.renderHistory();
      this.tell([m.job]);
    } else if (m.type === "log") {
      this.view.onLog(m);
    } else if (m.type === "events") {
      this.view.onEvents(m);
    }
  }

  watch(job) {
    remember(job.id);
    this.view.show(job);
    this.live.resume();
    this.renderHistory();
  }

  async start(kind) {
    const problems = $("run-problems");
    problems.replaceChildren();
    const res = await api("POST", "/api/jobs", { kind, params: this.ctx.readValues(), config_name: this.ctx.currentName() });
    if (!res.ok) {
      if (res.data.problems) this.ctx.serverProblems(res.data.problems, res.data.code);
      problems.append(el("p", { class: "problem" }, this.ctx.errorText(res)));
      for (const p of res.data.problems || []) {
        const item = el("p", { class: p.field ? "problem goto" : "problem", tabindex: p.field ? "0" : null }, this.ctx.problemText(p));
        if (p.field) item.addEventListener("click", () => this.ctx.focusField(p.field));
        problems.append(item);
      }
      return;
    }
    const job = res.data.job;
    this.jobs.set(job.id, job);
    this.watch(job);
    const busy = [...this.jobs.values()].some((j) => j.id !== job.id && j.status === "running");
    this.ctx.say(busy ? t("jobs.queued", { id: job.id }) : t("jobs.started", { id: job.id }));
  }

  async stop(job) {
    if (!window.confirm(t("confirm.stop", { id: job.id }))) return;
    const res = await api("POST", `/api/jobs/${job.id}/stop`, {});
    if (!res.ok) { this.ctx.say(this.ctx.errorText(res), "error"); return; }
    this.jobs.set(job.id, received(res.data.job));
    this.view.update(res.data.job);
    this.renderHistory();
  }

  renderHistory() {
    const list = $("history");
    list.replaceChildren();
    const jobs = [...this.jobs.values()].sort((a, b) => b.id - a.id);
    $("history-empty").hidden = jobs.length > 0;
    for (const job of jobs) {
      const li = el("li", { class: "history-item", "data-job": job.id, "data-status": job.status });
      if (this.view.job && this.view.job.id === job.id) li.classList.add("selected");
      const button = el("button", { type: "button", class: "link" });
      const stages = job.stages.map((s) => statusIcon(s.status)).join(" ");
      const meta = el("span", { class: "meta" }, ` · ${clock(job.created_at)}`);
      if (job.started_at) meta.append(" · ", clockSpan(job)); // counts on while it runs (JobView.tick)
      button.append(
        el("span", { class: "stage-icons" }, stages),
        el("span", {}, ` #${job.id} ${kindLabel(job.kind)} · ${t(`status.${job.status}`)}`),
        meta,
      );
      button.addEventListener("click", () => this.watch(job));
      li.append(button);
      list.append(li);
    }
  }

  retranslate() {
    this.renderHistory();
    this.view.retranslate();
    const chip = $("live-chip");
    if (!chip.hidden) this.onState(chip.dataset.up === "1");
  }
}
