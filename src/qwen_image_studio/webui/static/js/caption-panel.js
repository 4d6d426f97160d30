// Automatic captions in the Dataset tab: the form's captioning settings (placed here by the FormView), a
// preview job on the first few images (nothing written) and the job that captions the dataset. Both run
// in the studio's job queue; the server sets what makes them safe (the workspace's caption history, so the
// gallery's Undo takes the captions back; the preview's count). No parameter is named here.
import { api } from "./api.js";
import { $, el } from "./dom.js";
import { t, localText } from "./i18n.js";

const FINAL = ["done", "failed", "stopped", "lost"];
const PREVIEW_KIND = "caption_preview";
const RUN_KIND = "caption_images";

export class CaptionPanel {
  /** `ctx`: {readValues(), currentName(), datasetValue(), serverProblems(list), focusField(name),
   * problemText(p), errorText(res), showRefusal(box, res), say(text, level), watchJob(job), captionsWritten()}. */
  constructor(ctx, previewCount) {
    this.ctx = ctx;
    this.previewCount = previewCount;
    this.job = null; // the job this panel started and waits for: {id, kind}
    this.result = null;
    $("cap-preview").addEventListener("click", () => this.start(PREVIEW_KIND));
    $("cap-run").addEventListener("click", () => this.start(RUN_KIND));
    $("cap-watch").addEventListener("click", () => this.job && this.ctx.watchJob(this.job));
    this.render();
  }

  render() {
    $("cap-preview").textContent = t("cap.preview", { count: this.previewCount });
    this.showStatus();
    this.showResult();
  }

  async start(kind) {
    if (kind === RUN_KIND && !window.confirm(t("cap.confirm", { path: this.ctx.datasetValue() || "-" }))) return;
    const box = $("cap-status");
    box.replaceChildren();
    this.result = null;
    this.showResult();
    const body = { kind, params: this.ctx.readValues(), config_name: this.ctx.currentName() };
    const res = await api("POST", "/api/jobs", body);
    if (!res.ok) {
      this.ctx.showRefusal(box, res);
      return;
    }
    this.job = res.data.job;
    this.showStatus();
  }

  /** A job changed (from the live channel): follow ours, and show what it made when it ends. */
  async onJob(job) {
    if (!this.job || job.id !== this.job.id) return;
    const ended = FINAL.includes(job.status) && !FINAL.includes(this.job.status);
    this.job = job;
    this.showStatus();
    if (!ended) return;
    const res = await api("GET", `/api/jobs/${job.id}`);
    if (!res.ok) return;
    this.job = res.data.job;
    this.result = res.data.job;
    this.showStatus();
    this.showResult();
    if (job.kind === RUN_KIND && (res.data.job.captions_total || 0) > 0) this.ctx.captionsWritten();
  }

  showStatus() {
    const line = $("cap-job");
    const watch = $("cap-watch");
    watch.hidden = !this.job;
    if (!this.job) { line.textContent = ""; return; }
    const job = this.job;
    const what = t(`stage.${job.kind}`);
    let text = t("cap.job", { id: job.id, what, status: t(`status.${job.status}`) });
    const failed = (job.stages || []).find((s) => s.status === "failed");
    if (failed && (failed.reason || failed.reason_i18n)) text += ` — ${localText(failed.reason, failed.reason_i18n)}`;
    line.textContent = text;
    line.dataset.status = job.status;
  }

  showResult() {
    const box = $("cap-results");
    box.replaceChildren();
    const job = this.result;
    if (!job) return;
    const captions = job.captions || [];
    const total = job.captions_total || 0;
    if (job.kind === PREVIEW_KIND) {
      box.append(el("p", { class: "hint" }, total ? t("cap.preview_done", { count: total }) : t("cap.none")));
    } else {
      box.append(el("p", { class: "hint" }, total ? t("cap.run_done", { count: total }) : t("cap.none")));
    }
    const path = this.ctx.datasetValue();
    const list = el("div", { class: "cap-list" });
    for (const c of captions) {
      const card = el("figure", { class: "cap-card", "data-image": c.image });
      if (path) {
        const src = "/api/gallery/thumb?" + new URLSearchParams({ path, image: c.image, size: "256" });
        card.append(el("img", { src, alt: c.image.split(/[\\/]/).pop(), loading: "lazy" }));
      }
      card.append(el("figcaption", {}, c.image.split(/[\\/]/).pop()), el("p", { class: "cap-text" }, c.caption || ""));
      list.append(card);
    }
    box.append(list);
  }
}
