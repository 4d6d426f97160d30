// The job's sample images: one row per prompt, its steps side by side (newest first), so one prompt is
// compared across training; a click (or Enter) on an image opens it large, ◀ ▶ (or the arrow keys) move
// to the same prompt's earlier or later step. Above the rows, a slider picks a step (every row scrolls to it
// and marks it) and a select shows one prompt or all.
import { $, el } from "./dom.js";
import { t } from "./i18n.js";
import { sampleGrid } from "./samples-model.js";

export class SamplesView {
  constructor(box, empty, hint) {
    this.box = box;
    this.empty = empty;
    this.hint = hint;
    this.grid = { steps: [], rows: [] };
    this.urlOf = () => "";
    this.open = null; // {row, step} shown in the dialog
    this.atStep = null; // the slider's step (null: the newest)
    this.onlyRow = ""; // the prompt select's row key ("": all prompts)
    this.dialog = $("sample-dialog");
    $("sample-older").addEventListener("click", () => this.move(1));
    $("sample-newer").addEventListener("click", () => this.move(-1));
    this.dialog.addEventListener("keydown", (e) => {
      if (e.key === "ArrowLeft") { this.move(1); e.preventDefault(); }
      if (e.key === "ArrowRight") { this.move(-1); e.preventDefault(); }
    });
    this.dialog.addEventListener("close", () => { this.open = null; });
  }

  promptText(row) {
    return row.prompt ?? (row.index === null ? "" : t("samples.prompt_n", { n: row.index + 1 }));
  }

  /** Show these sample files; `urlOf(file)` is where each one is served. */
  show(files, urlOf) {
    this.grid = sampleGrid(files);
    this.urlOf = urlOf;
    this.render();
  }

  render() {
    const { steps, rows } = this.grid;
    this.box.replaceChildren();
    this.empty.hidden = rows.length > 0;
    this.hint.hidden = rows.length === 0;
    if (steps.length > 1 || rows.length > 1) this.box.append(this.controls());
    for (const [r, row] of rows.entries()) {
      if (this.onlyRow !== "" && String(r) !== this.onlyRow) continue;
      const prompt = this.promptText(row);
      const section = el("section", { class: "sample-row", "data-prompt": row.index ?? "" });
      section.append(el("h4", { class: "sample-prompt" }, prompt));
      const strip = el("div", { class: "sample-strip" });
      for (const step of steps) {
        const info = row.cells[step];
        strip.append(info ? this.figure(info, prompt, r, step) : el("div", { class: "sample missing" }));
      }
      for (const info of row.loose) strip.append(this.figure(info, prompt || info.file.name, r, null));
      section.append(strip);
      this.box.append(section);
    }
    this.markStep();
    if (this.open && this.dialog.open) this.showLarge(this.open.row, this.open.step);
  }

  /** The step slider (oldest at the left) and the prompt select. */
  controls() {
    const { steps, rows } = this.grid;
    const ascending = [...steps].reverse();
    if (this.atStep !== null && !steps.includes(this.atStep)) this.atStep = null;
    const at = this.atStep === null ? ascending.length - 1 : ascending.indexOf(this.atStep);
    const box = el("div", { class: "sample-controls" });
    if (steps.length > 1) {
      const slider = el("input", { type: "range", id: "samples-step", min: "0", max: String(ascending.length - 1), step: "1", value: String(at), "aria-label": t("samples.slider") });
      const value = el("output", { id: "samples-step-value", for: "samples-step" });
      const say = (i) => { value.textContent = t("samples.slider_value", { step: ascending[i], n: i + 1, total: ascending.length }); };
      say(at);
      slider.addEventListener("input", () => {
        const i = Number(slider.value);
        this.atStep = i === ascending.length - 1 ? null : ascending[i];
        say(i);
        this.markStep();
      });
      const label = el("label", { class: "sample-slider" }, `${t("samples.slider")} `);
      label.append(slider);
      box.append(label, value);
    }
    if (rows.length > 1) {
      const select = el("select", { id: "samples-prompt", "aria-label": t("samples.prompt") });
      select.append(el("option", { value: "" }, t("samples.all_prompts")));
      for (const [r, row] of rows.entries()) select.append(el("option", { value: String(r) }, this.promptText(row) || row.loose[0]?.file.name || String(r + 1)));
      select.value = this.onlyRow;
      select.addEventListener("change", () => { this.onlyRow = select.value; this.render(); });
      box.append(select);
    }
    return box;
  }

  /** Mark every row's sample at the slider's step and scroll each strip to it. */
  markStep() {
    const step = this.atStep ?? this.grid.steps[0];
    for (const figure of this.box.querySelectorAll("figure.sample")) {
      const on = figure.dataset.step !== "" && Number(figure.dataset.step) === step;
      figure.classList.toggle("at-step", on);
      if (on && this.atStep !== null) {
        const strip = figure.parentElement;
        const [f, s] = [figure.getBoundingClientRect(), strip.getBoundingClientRect()];
        strip.scrollLeft += f.left - s.left - (s.width - f.width) / 2;
      }
    }
  }

  figure(info, prompt, r, step) {
    const stepText = step === null ? info.file.name : t("samples.step", { step });
    const figure = el("figure", { class: "sample", "data-step": step ?? "" });
    const button = el("button", { type: "button", class: "sample-open", "aria-label": t("samples.open", { prompt, step: step ?? "–" }) });
    button.append(el("img", { src: this.urlOf(info.file), alt: `${prompt} — ${stepText}`, loading: "lazy" }));
    button.addEventListener("click", () => this.showLarge(r, step));
    figure.append(button, el("figcaption", { class: "sample-step" }, stepText));
    return figure;
  }

  /** Open the dialog on one prompt's sample at a step. */
  showLarge(r, step) {
    const row = this.grid.rows[r];
    const info = row && (step === null ? row.loose[0] : row.cells[step]);
    if (!info) return;
    this.open = { row: r, step };
    const prompt = this.promptText(row) || info.file.name;
    $("sample-dialog-title").textContent = prompt;
    $("sample-dialog-step").textContent = step === null ? info.file.name : t("samples.step", { step });
    const img = $("sample-dialog-img");
    img.src = this.urlOf(info.file);
    img.alt = `${prompt} — ${$("sample-dialog-step").textContent}`;
    const have = this.stepsOf(row);
    const at = have.indexOf(step);
    $("sample-older").disabled = step === null || at < 0 || at >= have.length - 1;
    $("sample-newer").disabled = step === null || at <= 0;
    if (!this.dialog.open) this.dialog.showModal();
  }

  stepsOf(row) {
    return this.grid.steps.filter((s) => row.cells[s]);
  }

  /** +1: an earlier step of the same prompt, -1: a later one. */
  move(by) {
    if (!this.open || this.open.step === null) return;
    const have = this.stepsOf(this.grid.rows[this.open.row]);
    const next = have[have.indexOf(this.open.step) + by];
    if (next !== undefined) this.showLarge(this.open.row, next);
  }
}
