// The dataset tab: inspect the form's dataset TOML, or write a new one from a folder and use it.
import { api } from "./api.js";
import { $, el } from "./dom.js";
import { t, tm } from "./i18n.js";

/** The report of `dataset inspect` as lines of text (never HTML). */
export function reportLines(report) {
  const lines = [{ text: report.edit ? t("report.mode_edit") : t("report.mode_t2i"), cls: "head" }];
  for (const d of report.datasets) {
    lines.push({ text: t("report.dataset", { index: d.index, source: d.source }), cls: "head" });
    lines.push({ text: t("report.settings", { w: d.resolution[0], h: d.resolution[1], batch: d.batch_size, repeats: d.num_repeats }) });
    lines.push({ text: t("report.images", { found: d.image_count, usable: d.usable, unreadable: d.unreadable.length }) });
    lines.push({ text: t("report.captions", { found: d.captions_found, missing: d.captions_missing.length, empty: d.captions_empty.length }) });
    for (const b of d.buckets) {
      lines.push({ text: t("report.bucket", { w: b.width, h: b.height, images: b.images, repeats: d.num_repeats, samples: b.samples, batches: b.batches }), cls: "sub" });
    }
    lines.push({ text: t("report.epoch", { samples: d.samples_per_epoch, batches: d.batches_per_epoch }) });
    if (d.controls) {
      lines.push({ text: t("report.controls", { matched: d.controls.matched, missing: d.controls.missing.length, unmatched: d.controls.unmatched.length }) });
    }
    lines.push({ text: t("report.cache_dir", { path: d.cache_directory }) });
    for (const [key, c] of [["report.latents", d.latent_cache], ["report.text", d.text_cache]]) {
      lines.push({ text: t(key, { present: c.present, missing: c.missing.length, outdated: c.outdated.length }) });
    }
    lines.push({ text: t("report.stale", { count: d.stale_cache_files.length }) });
    for (const r of d.rotated || []) {
      const key = [2, 4, 5, 7].includes(r.orientation) ? "report.mirrored" : "report.rotated";
      lines.push({ text: t(key, { path: r.path, orientation: r.orientation, w: r.size[0], h: r.size[1], sw: r.stored_size[0], sh: r.stored_size[1] }), cls: "sub" });
    }
  }
  lines.push({ text: t("report.total", { usable: report.usable, images: report.images, samples: report.samples_per_epoch, batches: report.batches_per_epoch }), cls: "head" });
  if (report.problems.length) {
    lines.push({ text: t("report.problems"), cls: "problem head" });
    for (const p of report.problems) lines.push({ text: `• ${p}`, cls: "problem" });
  } else {
    lines.push({ text: t("report.no_problems"), cls: "ok" });
  }
  return lines;
}

function show(box, lines) {
  box.replaceChildren();
  for (const line of lines) box.append(el("p", { class: line.cls || "" }, line.text));
}

export class DatasetPanel {
  /** `ctx`: {datasetValue(), isEdit(), formValues(), useDataset(path), errorText(res), say(text, level)}. */
  constructor(ctx) {
    this.ctx = ctx;
    this.last = null; // the last answer, re-rendered on a language switch
    $("dataset-inspect").addEventListener("click", () => this.inspect());
    $("dataset-path").addEventListener("change", (e) => {
      if (e.target.value.trim() !== (this.ctx.datasetValue() || "")) this.ctx.useDataset(e.target.value.trim());
    });
    $("ds-create").addEventListener("click", () => this.create());
  }

  /** Show the form's current dataset path. */
  sync() { $("dataset-path").value = this.ctx.datasetValue() || ""; }

  async inspect() {
    const typed = $("dataset-path").value.trim();
    if (typed && typed !== (this.ctx.datasetValue() || "")) this.ctx.useDataset(typed);
    this.sync();
    const path = this.ctx.datasetValue();
    if (!path) { this.last = { box: "dataset-report", lines: () => [{ text: t("dataset.none"), cls: "problem" }] }; this.render(); return; }
    const res = await api("POST", "/api/dataset/inspect", { path, edit: this.ctx.isEdit(), params: this.ctx.formValues() });
    this.last = { box: "dataset-report", lines: () => this.answerLines(res) };
    this.render();
  }

  answerLines(res) {
    if (res.ok) return [{ text: res.data.path, cls: "path" }, ...reportLines(res.data.report)];
    if (res.data.subject === "dataset" && res.data.code === "exists") { // not errorText's "a configuration ..."
      return [{ text: t("err.dataset_exists", { name: res.data.name }), cls: "problem head" },
        { text: tm(res.data.error_i18n || res.data.error), cls: "problem" }];
    }
    const lines = [{ text: res.data.code === "dataset_invalid" ? t("dataset.invalid") : this.ctx.errorText(res), cls: "problem head" }];
    if (res.data.code !== "dataset_invalid") return lines; // errorText lists the problems
    for (const p of res.data.problems_i18n || res.data.problems || []) lines.push({ text: `• ${tm(p)}`, cls: "problem" });
    return lines;
  }

  async create() {
    const resolution = $("ds-resolution").value.trim().split(/[x×, ]+/).filter(Boolean).map(Number);
    const body = {
      name: $("ds-name").value.trim(),
      image_directory: $("ds-images").value.trim(),
      control_directory: $("ds-controls").value.trim() || null,
      resolution: resolution.length === 1 ? resolution[0] : resolution,
      num_repeats: Number($("ds-repeats").value.trim() || "1"),
    };
    const res = await api("POST", "/api/dataset/create", body);
    if (!res.ok) {
      this.last = { box: "ds-create-result", lines: () => this.answerLines(res) };
      this.render();
      if (res.status === 409) $("ds-name").focus();
      return;
    }
    this.ctx.useDataset(res.data.path);
    this.sync();
    this.last = { box: "ds-create-result", lines: () => [{ text: t("dataset.created", { path: res.data.path }), cls: "ok" }, ...reportLines(res.data.report)] };
    this.render();
  }

  render() {
    if (!this.last) return;
    show($(this.last.box), this.last.lines());
  }
}
