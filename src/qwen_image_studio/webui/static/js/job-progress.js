// The whole job's progress, from its stages and their progress events (pure: no DOM, testable in node).
//
// The bar shows the job: with n stages, the k-th (from 0) running at fraction f of its main phase, the
// job is at (k + f) / n; a stage that ended counts whole, a finished job is at 1. A stage's main phase is
// its first kind of progress ("cache latents", "train", ...); events marked `sub` (training's sample
// images and LoRA saving, see events.py) are sub-phases: shown beside the bar, never moving it. The value
// shown never goes down (a guard keeps the highest value of the job), so a late or repeated report
// cannot make the bar jump back.
//
// The job's ETA: the running stage's own ETA (its main phase's last report, counted down on this page's
// clock since it arrived) plus, for the stages still waiting, nothing that could be known yet: they are
// named as "+ N stages". Training is the pipeline's last stage, and its ETA (steps left at the average
// pace so far, which includes the sampling and saving done so far) is then the job's ETA.


export class JobProgress {
  constructor() {
    this.reset();
  }

  /** Forget everything (another job is shown). */
  reset() {
    this.main = new Map(); // stage -> its last main-phase event (with `seen`)
    this.sub = new Map(); // stage -> its last sub-phase event (with `seen`)
    this.floor = 0;
  }

  /** Take one progress event; `seen` is the page's monotonic time (seconds) when it arrived. */
  add(event, seen) {
    const e = { ...event, seen };
    if (event.sub) this.sub.set(event.stage, e);
    else this.main.set(event.stage, e);
  }

  /** The job's progress now: {fraction 0..1, index, count, stage, main, sub, eta, pending}. */
  state(job, now) {
    const stages = job ? job.stages : [];
    const count = stages.length;
    let index = stages.findIndex((s) => s.status === "running");
    const running = index >= 0 ? stages[index] : null;
    if (!running) index = stages.filter((s) => s.status === "done").length; // "skipped": never run
    const main = running ? this.main.get(running.stage) || null : null;
    let sub = running ? this.sub.get(running.stage) || null : null;
    if (sub && (sub.done >= sub.total || (main && main.t > sub.t))) sub = null; // that sub-phase is over
    let f = 0;
    if (main && main.total > 0) {
      const done = Math.max(main.done, sub && Number.isFinite(sub.step) ? sub.step : 0);
      f = Math.min(1, Math.max(0, done / main.total));
    }
    let fraction = count ? (Math.min(index, count) + (running ? f : 0)) / count : 0;
    if (job && job.status === "done") fraction = 1;
    this.floor = Math.max(this.floor, Math.min(1, fraction));
    const pending = running ? stages.slice(index + 1).filter((s) => s.status === "pending").length : 0;
    let eta = null;
    if (main && Number.isFinite(main.eta)) eta = Math.max(0, main.eta - (now - main.seen));
    return { fraction: this.floor, index, count, stage: running, main, sub, eta, pending };
  }
}

/** The i18n key of a progress phase ("cache latents" -> "phase.cache_latents"). */
export function phaseKey(phase) {
  return `phase.${String(phase || "").trim().replace(/\s+/g, "_")}`;
}
