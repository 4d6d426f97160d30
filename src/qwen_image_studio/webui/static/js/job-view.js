// The watched job: stages with ✅ ❌ ⏰, progress and ETA from events, log, loss chart, samples and LoRA files.
import { api } from "./api.js";
import { $, el } from "./dom.js";
import { showJobPeak } from "./gpu-chip.js";
import { bytes, clockSpan, duration, elapsed, monoNow, rate, received, tickClocks } from "./format.js";
import { hasKey, localText, t } from "./i18n.js";
import { JobProgress, phaseKey } from "./job-progress.js";
import { LogView } from "./log-view.js";
import { LoraDetails } from "./lora-details.js";
import { LossChart } from "./loss-chart.js";
import { SamplesView } from "./samples-view.js";
import { lossText, lowestValidation } from "./validation-model.js";

export const LOG_CAP = 2000;
const ICONS = { done: "✅", failed: "❌", stopped: "⏰", lost: "⏰", running: "⏳", pending: "·", skipped: "–" };
const EXIT_USER = 2;
const EXIT_NOT_AVAILABLE = 3;
const EXIT_OOM = 4;

export function statusIcon(status) { return ICONS[status] || "·"; }

export function kindLabel(kind) { return kind === "pipeline" ? t("jobs.kind.pipeline") : t(`stage.${kind}`); }

/** A progress phase in the page's language ("cache latents" -> "caching latents"); unknown ones as sent. */
export function phaseLabel(phase) { return hasKey(phaseKey(phase)) ? t(phaseKey(phase)) : String(phase ?? ""); }

function unitLabel(unit) { return hasKey(`unit.${unit}`) ? t(`unit.${unit}`) : String(unit || "it"); }

/** A stage's status in words ("stopped" is always the user's doing: its exit code -15 or -9 says no more). */
function stageStatus(stage) {
  return stage.status === "stopped" ? t("stage.stopped_by_you") : t(`status.${stage.status}`);
}

/** What a stage's line says after its clock: how it ended, in the page's language. */
function endNote(stage) {
  if (stage.status === "stopped") return null;
  if (stage.exit_code === null || stage.exit_code === undefined) return null;
  if (stage.exit_code < 0 && stage.reason_i18n) return localText(stage.reason, stage.reason_i18n); // "killed by SIGKILL"
  return t("jobs.exit_code", { code: stage.exit_code });
}

export class JobView {
  /** `ctx`: {focusField(name), stop(job)}. */
  constructor(ctx) {
    this.ctx = ctx;
    this.job = null;
    this.events = 0;
    this.progress = new JobProgress();
    this.log = new LogView($("log"), $("log-skipped"), $("log-follow"), LOG_CAP);
    this.chart = new LossChart($("loss-chart"), $("chart-empty"));
    this.samples = new SamplesView($("samples"), $("samples-empty"), $("samples-hint"));
    this.loraDetails = new LoraDetails(); // each LoRA's "details" toggle (header facts, both download forms)
    this.files = [];
    this.folder = null;
    this.detailsTimer = null;
    $("job-stop").addEventListener("click", () => { if (this.job) this.ctx.stop(this.job); });
    setInterval(() => this.tick(), 1000);
  }

  /** Once a second: every running clock on the page (header, stages, history) and the ETA count on. */
  tick() {
    tickClocks(document);
    this.renderProgress();
  }

  /** Start watching another job (or none). */
  show(job) {
    const same = this.job && job && this.job.id === job.id;
    this.job = received(job);
    if (!same) {
      this.events = 0;
      this.progress.reset();
      this.files = [];
      this.folder = null;
      this.loraDetails.reset();
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
    this.job = received(job);
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
      if (event.type === "progress") this.progress.add(event, monoNow());
      else if (event.type === "metric" && typeof event.loss === "number") this.chart.add(event.step, event.loss, event.loss_avg);
      else if (event.type === "metric" && typeof event.validation_loss === "number") this.chart.addValidation(event.step, event.validation_loss);
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
    this.folder = res.data.job.output_folder;
    this.renderFiles();
    showJobPeak(res.data.job);
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
      const meta = el("span", { class: "meta" }, stageStatus(stage));
      if (stage.started_at) meta.append(" · ", clockSpan(stage));
      const note = endNote(stage);
      if (note) meta.append(` · ${note}`);
      li.append(meta);
      list.append(li);
    }
    this.renderError();
    this.renderProgress();
  }

  renderSummary() {
    const job = this.job;
    if (!job) return;
    const source = job.config_name ? t("jobs.config", { name: job.config_name }) : t("jobs.form_values");
    const summary = $("job-summary");
    summary.textContent = `${statusIcon(job.status)} #${job.id} ${kindLabel(job.kind)} · ${t(`status.${job.status}`)} · ${source}`;
    if (job.started_at) summary.append(" · ", clockSpan(job));
    summary.dataset.status = job.status;
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

  /** The bar shows the whole job and never goes back; the text names the stage, its phase and the job's
   *  ETA; a sub-phase (sampling, saving) is shown beside it (see job-progress.js). */
  renderProgress() {
    const job = this.job;
    if (!job) return;
    const p = this.progress.state(job, monoNow());
    const parts = [];
    if (job.status === "running" && p.stage) {
      if (p.count > 1) parts.push(t("progress.stage_of", { k: p.index + 1, n: p.count, stage: t(`stage.${p.stage.stage}`) }));
      const main = p.main;
      if (main && main.total) {
        parts.push(t("progress.phase", { phase: phaseLabel(main.phase), done: main.done, total: main.total }));
        if (main.rate) parts.push(t("progress.rate", { rate: rate(main.rate), unit: unitLabel(main.unit) }));
      } else {
        parts.push(`${t("progress.waiting")} ${t("progress.elapsed", { time: duration(elapsed(p.stage)) })}`);
      }
      if (p.eta !== null) {
        const eta = duration(p.eta);
        parts.push(t("progress.eta", { eta: p.pending ? t("progress.eta_more", { eta, count: p.pending }) : eta }));
      }
    } else {
      parts.push(t(`status.${job.status}`));
    }
    const sub = $("progress-sub");
    const s = job.status === "running" ? p.sub : null;
    sub.hidden = !s;
    sub.textContent = !s ? ""
      : s.total > 1 ? t("progress.sub", { phase: phaseLabel(s.phase), done: s.done, total: s.total })
      : t("progress.sub_busy", { phase: phaseLabel(s.phase) });
    sub.dataset.phase = s ? s.phase : "";
    const pct = 100 * p.fraction;
    $("progress-fill").style.width = `${pct.toFixed(1)}%`;
    const bar = $("progress-bar");
    bar.setAttribute("aria-valuenow", pct.toFixed(0));
    bar.dataset.status = job.status;
    $("progress-text").textContent = parts.join(" · ");
  }

  renderFiles() {
    const job = this.job;
    if (!job) return;
    const files = $("files");
    files.replaceChildren();
    const path = (name) => name.split("/").map(encodeURIComponent).join("/");
    this.samples.show(this.files.filter((f) => f.kind === "sample"), (f) => `/api/jobs/${job.id}/samples/${path(f.name)}`);
    const loras = this.files.filter((f) => f.kind === "checkpoint");
    const best = lowestValidation(loras); // every file with the lowest validation loss is marked
    for (const f of loras) {
      const url = `/api/jobs/${job.id}/files/${path(f.name)}`;
      const li = el("li");
      li.append(el("a", { href: url, download: f.name.split("/").pop() }, f.name), el("span", { class: "meta" }, ` ${bytes(f.size)}`));
      if (Number.isFinite(f.validation_loss)) {
        li.dataset.validationLoss = String(f.validation_loss);
        li.append(el("span", { class: "meta" }, ` · ${t("files.validation_loss", { value: lossText(f.validation_loss) })}`));
        if (f.validation_loss === best) {
          li.classList.add("best-validation");
          li.append(" ", el("span", { class: "badge" }, t("files.best_validation")));
        }
      }
      const [toggle, panel] = this.loraDetails.toggle(job.id, f.name);
      li.append(" ", toggle, panel);
      files.append(li);
    }
    $("files-empty").hidden = loras.length > 0;
    const folder = $("files-folder"); // the job's own run folder: no other job writes there
    folder.hidden = !this.folder || !job.stages.some((s) => s.stage === "train_network");
    folder.textContent = this.folder ? t("files.folder", { path: this.folder }) : "";
  }

  /** Re-render everything in the current language. */
  retranslate() {
    this.render();
    this.renderFiles();
    this.log.retranslate();
    this.chart.redraw();
  }
}
