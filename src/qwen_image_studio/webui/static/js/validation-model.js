// Validation loss in the job view, as pure functions (no DOM): the chart's aligned series, the best LoRA file.

/** uPlot's columns [steps, loss, average, validation]: every step that has a training loss or a validation
 *  loss, in order; null where a series has no value at that step. `validation` maps step -> loss. */
export function chartData(steps, loss, avg, validation) {
  if (!validation.size) return [steps, loss, avg, steps.map(() => null)];
  const rows = new Map();
  steps.forEach((step, i) => rows.set(step, [loss[i], avg[i], null]));
  for (const [step, value] of validation) {
    const row = rows.get(step);
    if (row) row[2] = value;
    else rows.set(step, [null, null, value]);
  }
  const xs = [...rows.keys()].sort((a, b) => a - b);
  return [xs, ...[0, 1, 2].map((k) => xs.map((step) => rows.get(step)[k]))];
}

/** The lowest `validation_loss` among the files that carry one; null when none does. */
export function lowestValidation(files) {
  const values = files.map((f) => f.validation_loss).filter((v) => Number.isFinite(v));
  return values.length ? Math.min(...values) : null;
}

/** A loss as the file list shows it (six significant digits: neighbouring epochs often differ late). */
export function lossText(value) {
  return Number(value).toPrecision(6);
}
