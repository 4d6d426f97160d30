// The watched job: stages with ✅ ❌ ⏰, progress and ETA from events, log, loss chart, samples and LoRA files.
import { api } from "./api.js";
import { $, el } from "./dom.js";
import { bytes, duration, rate, since } from "./format.js";
import { localText, t } from "./i18n.js";
import { LogView } from "./log-view.js";
import { LossChart } from "./loss-chart.js";

export const LOG_CAP = 2000;
const ICONS = { done: "✅", failed: "❌", stopped: "⏰", lost: "⏰", running: "⏳", pending: "·", skipped: "–" };
const EXIT_USER = 2;
const EXIT_NOT_AVAILABLE = 3;
const EXIT_OOM = 4;

export function statusIcon(status) { return ICONS[status] || "·"; }

export function kindLabel(kind) { return kind === "pipeline" ? t("jobs.kind.pipeline") : t(`stage.${kind}`); }

export class JobView {
  /** `ctx`: {focusField(name), stop(job)}. */
  constructor(ctx) {
    this.ctx = ctx;
    this.job = null;
    this.events = 0;
    this.progress = null;
    this.log = new LogView($("log"), $("log-skipped"), $("log-follow"), LOG_CAP);
    this.chart = new LossChart($("loss-chart"), $("chart-empty"));
    this.files = [];
    this.detailsTimer = null;
    $("job-stop").addEventListener("click", () => { if (this.job) this.ctx.stop(this.job); });
    setInterval(() => { this.renderProgress(); this.renderSummary(); }, 1000);
  }

  /** Start watching another job (or none). */
  show(job) {
    const same = this.job && job && this.job.id === job.id;
    this.job = job;
    if (!same) {
      this.events = 0;
      this.progress = null;
      this.files = [];
      this.log.reset();
      this.chart.reset();
      if (job) this.fetchDetails();
    }
    this.render();
  }

  /** Where the page is, for the live channel to resume from. */
  position() {
    return this.job ? { job: this.job.id, logAfter: this.log.lastLine(), eventsAfter: this.events, tail: LOG_CAP } : null;
  }

  update(job) {
    if (!this.job || job.id !== this.job.id) return;
    const ended = this.job.status !== job.status && ["done", "failed", "stopped", "lost"].includes(job.status);
    this.job = job;
    if (ended) this.fetchDetails();
    this.render();
  }

  onLog(message) {
    if (this.job && message.job === this.job.id) this.log.apply(message);
  }

  onEvents(message) {
    if (!this.job || message.job !== this.job.id) return;
    let artifacts = false;
    for (const [n, event] of message.events) {
      if (n <= this.events) continue;
      this.events = n;
      if (event.type === "progress") this.progress = { ...event, seen: Date.now() / 1000 };
      else if (event.type === "started") this.progress = null;
      else if (event.type === "metric" && typeof event.loss === "number") this.chart.add(event.step, event.loss, event.loss_avg);
      else if (event.type === "artifact") artifacts = true;
    }
    if (artifacts) this.scheduleDetails();
    this.renderProgress();
  }

  scheduleDetails() {
    clearTimeout(this.detailsTimer);
    this.detailsTimer = setTimeout(() => this.fetchDetails(), 300);
  }

  async fetchDetails() {
    if (!this.job) return;
    const id = this.job.id;
    const res = await api("GET", `/api/jobs/${id}`);
    if (!res.ok || !this.job || this.job.id !== id) return;
    this.files = res.data.job.files;
    this.renderFiles();
  }

  render() {
    const job = this.job;
    $("job-empty").hidden = Boolean(job);
    $("job-body").hidden = !job;
    $("job-stop").hidden = !job || !["queued", "running"].includes(job.status);
    $("job-stop").disabled = Boolean(job && job.stop_requested);
    $("job-stop").textContent = job && job.stop_requested ? t("jobs.stopping") : t("jobs.stop");
    if (!job) { $("job-summary").textContent = ""; return; }
    this.renderSummary();
    $("log-download").href = `/api/jobs/${job.id}/log`;
    const list = $("job-stages");
    list.replaceChildren();
    for (const stage of job.stages) {
      const li = el("li", { class: `stage ${stage.status}`, "data-stage": stage.stage, "data-status": stage.status });
      li.append(el("span", { class: "icon", "aria-hidden": "true" }, statusIcon(stage.status)));
      li.append(el("span", { class: "name" }, t(`stage.${stage.stage}`)));
      const bits = [t(`status.${stage.status}`)];
      if (stage.started_at) bits.push(duration(since(stage.started_at, stage.finished_at)));
      if (stage.exit_code !== null && stage.exit_code !== undefined) bits.push(t("jobs.exit_code", { code: stage.exit_code }));
      li.append(el("span", { class: "meta" }, bits.join(" · ")));
      list.append(li);
    }
    this.renderError();
    this.renderProgress();
  }

  renderSummary() {
    const job = this.job;
    if (!job) return;
    const source = job.config_name ? t("jobs.config", { name: job.config_name }) : t("jobs.form_values");
    const took = duration(since(job.started_at, job.finished_at));
    $("job-summary").textContent =
      `${statusIcon(job.status)} #${job.id} ${kindLabel(job.kind)} · ${t(`status.${job.status}`)} · ${source} · ${took}`;
    $("job-summary").dataset.status = job.status;
  }

  renderError() {
    const box = $("job-error");
    box.replaceChildren();
    const stage = this.job && this.job.stages.find((s) => ["failed", "lost", "stopped"].includes(s.status));
    box.hidden = !stage;
    if (!stage) return;
    box.dataset.status = stage.status;
    const code = stage.exit_code;
    const reason = localText(stage.reason, stage.reason_i18n);
    const add = (text, cls = "") => { box.append(el("p", { class: cls }, text)); };
    if (stage.status === "stopped") add(`⏰ ${t("error.stopped")}`);
    else if (stage.status === "lost") add(`⏰ ${t("error.lost")}`);
    else if (code === EXIT_OOM) { add(`❌ ${t("error.oom")}`, "headline"); add(reason); }
    else if (code === EXIT_USER || code === EXIT_NOT_AVAILABLE || code === null) {
      add(`❌ ${code === EXIT_NOT_AVAILABLE ? t("error.not_available") : t("error.user")}`, "headline");
      add(reason);
    } else {
      add(`❌ ${t("error.crash", { code, reason })}`, "headline");
    }
    if (stage.field) {
      const link = el("button", { type: "button", class: "small" }, t("error.show_field"));
      link.addEventListener("click", () => this.ctx.focusField(stage.field));
      box.append(link);
    }
    if (stage.status === "failed" && stage.log_tail) {
      box.append(el("p", { class: "tail-title" }, t("error.tail")));
      box.append(el("pre", { class: "tail" }, stage.log_tail));
    }
  }

  renderProgress() {
    const text = $("progress-text");
    const fill = $("progress-fill");
    const bar = $("progress-bar");
    const job = this.job;
    if (!job) return;
    const running = job.stages.find((s) => s.status === "running");
    // a progress report belongs to its stage: the next stage starts from "waiting"
    const p = this.progress && (!running || this.progress.stage === running.stage) ? this.progress : null;
    let pct = 0;
    let line = "";
    if (job.status === "done") { pct = 100; line = t("status.done"); }
    else if (p && p.total) {
      pct = Math.min(100, (100 * p.done) / p.total);
      const eta = p.eta === null || p.eta === undefined ? null : Math.max(0, p.eta - (Date.now() / 1000 - p.seen));
      const parts = [`${p.phase}: ${p.done} / ${p.total}`];
      if (p.rate) parts.push(t("progress.rate", { rate: rate(p.rate), unit: p.unit || "it" }));
      if (eta !== null && job.status === "running") parts.push(t("progress.eta", { eta: duration(eta) }));
      line = parts.join(" · ");
    } else if (running) {
      line = `${t("progress.waiting")} ${t("progress.elapsed", { time: duration(since(running.started_at)) })}`;
    } else {
      line = t(`status.${job.status}`);
    }
    fill.style.width = `${pct.toFixed(1)}%`;
    bar.setAttribute("aria-valuenow", pct.toFixed(0));
    bar.dataset.status = job.status;
    text.textContent = line;
  }

  renderFiles() {
    const job = this.job;
    if (!job) return;
    const samples = $("samples");
    const files = $("files");
    samples.replaceChildren();
    files.replaceChildren();
    const images = this.files.filter((f) => f.kind === "sample");
    const loras = this.files.filter((f) => f.kind === "checkpoint");
    for (const f of images) {
      const url = `/api/jobs/${job.id}/samples/${f.name.split("/").map(encodeURIComponent).join("/")}`;
      const figure = el("figure", { class: "sample" });
      const img = el("img", { src: url, alt: f.name, loading: "lazy" });
      figure.append(img, el("figcaption", {}, f.name));
      samples.append(figure);
    }
    for (const f of loras) {
      const url = `/api/jobs/${job.id}/files/${f.name.split("/").map(encodeURIComponent).join("/")}`;
      const li = el("li");
      li.append(el("a", { href: url, download: f.name.split("/").pop() }, f.name), el("span", { class: "meta" }, ` ${bytes(f.size)}`));
      files.append(li);
    }
    $("samples-empty").hidden = images.length > 0;
    $("files-empty").hidden = loras.length > 0;
  }

  /** Re-render everything in the current language. */
  retranslate() {
    this.render();
    this.renderFiles();
    this.log.renderNote();
    this.chart.redraw();
  }
}
