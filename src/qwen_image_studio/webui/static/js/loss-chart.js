// The loss chart: uPlot (vendored in static/vendor), redrawn at most a few times a second. Training loss and
// its average per step; the validation loss (fixed timesteps and noise, see training/validation.py) as points
// joined by a line at the steps it was evaluated; the legend names the three.
import { t } from "./i18n.js";
import { chartData } from "./validation-model.js";

const REDRAW_MS = 400;
// Steps are whole numbers: the x axis ticks only at whole steps (1, 2, 5, 10, 20, 50 ... apart).
const STEP_INCRS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1000, 10000, 100000].map((e) => m * e)).sort((a, b) => a - b);
const VALIDATION_COLOUR = "#2f9e44";

/** The x range: the steps drawn, at least one step wide (a single point is not stretched over fractions). */
export function stepRange(min, max) {
  const lo = Math.floor(Number.isFinite(min) ? min : 0);
  const hi = Math.ceil(Number.isFinite(max) ? max : lo + 1);
  return [lo, Math.max(hi, lo + 1)];
}

export class LossChart {
  constructor(box, empty) {
    this.box = box;
    this.empty = empty;
    this.plot = null;
    this.timer = null;
    this.reset();
    window.addEventListener("resize", () => this.resize());
  }

  reset() {
    this.steps = [];
    this.loss = [];
    this.avg = [];
    this.validation = new Map(); // step -> validation loss
    if (this.plot) { this.plot.destroy(); this.plot = null; }
    this.box.replaceChildren();
    this.count();
    this.empty.hidden = false;
  }

  /** Add one metric event's values (events without a loss are ignored). */
  add(step, loss, avg) {
    if (!Number.isFinite(step) || !Number.isFinite(loss)) return;
    this.steps.push(step);
    this.loss.push(loss);
    this.avg.push(Number.isFinite(avg) ? avg : null);
    this.schedule();
  }

  /** Add a validation loss (a metric event's `validation_loss`) at its step. */
  addValidation(step, value) {
    if (!Number.isFinite(step) || !Number.isFinite(value)) return;
    this.validation.set(step, value);
    this.schedule();
  }

  schedule() {
    if (this.timer === null) this.timer = setTimeout(() => this.draw(), REDRAW_MS);
  }

  /** Points drawn so far (for tests and the empty note). */
  points() { return this.steps.length; }

  /** What the chart holds, on its box for tests: training and validation points. */
  count() {
    this.box.dataset.points = String(this.steps.length);
    this.box.dataset.validationPoints = String(this.validation.size);
  }

  width() { return Math.max(240, this.box.clientWidth || 480); }

  draw() {
    this.timer = null;
    if ((!this.steps.length && !this.validation.size) || !window.uPlot) return;
    this.empty.hidden = true;
    const withValidation = this.validation.size > 0; // its series (and legend entry) once there is a value
    const data = chartData(this.steps, this.loss, this.avg, this.validation).slice(0, withValidation ? 4 : 3);
    if (this.plot && this.plot.series.length !== data.length) { this.plot.destroy(); this.plot = null; this.box.replaceChildren(); }
    if (this.plot) { this.plot.setData(data); this.count(); return; }
    const opts = {
      width: this.width(),
      height: 220,
      scales: { x: { time: false, range: (u, min, max) => stepRange(min, max) } },
      axes: [
        { incrs: STEP_INCRS, values: (u, splits) => splits.map((v) => (Number.isInteger(v) ? String(v) : "")) },
        {},
      ],
      legend: { live: false },
      series: [
        { label: t("chart.step") },
        { label: t("chart.loss"), stroke: "#4c6ef5", width: 1, points: { show: (u) => u.data[0].length <= 60, size: 4 } },
        { label: t("chart.loss_avg"), stroke: "#e8590c", width: 2, spanGaps: true },
      ].concat(withValidation ? [
        {
          label: t("chart.validation"),
          stroke: VALIDATION_COLOUR,
          width: 2,
          dash: [6, 4],
          spanGaps: true,
          points: { show: true, size: 8, fill: VALIDATION_COLOUR },
        },
      ] : []),
    };
    this.plot = new window.uPlot(opts, data, this.box);
    this.count();
  }

  /** Rebuild (e.g. after a language switch, so the legend is translated). */
  redraw() {
    if (this.plot) { this.plot.destroy(); this.plot = null; this.box.replaceChildren(); }
    this.draw();
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: this.width(), height: 220 });
  }
}
