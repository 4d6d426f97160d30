// Numbers as people read them: durations, rates, sizes, times of day.
import { currentLanguage } from "./i18n.js";

/** 75 -> "1:15", 3725 -> "1:02:05". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

/** A rate with three significant digits. */
export function rate(value) {
  if (!Number.isFinite(value)) return "–";
  return value >= 100 ? value.toFixed(0) : value.toPrecision(3);
}

/** 1536 -> "1.5 KB". */
export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

/** A time of day for a unix timestamp. */
export function clock(ts) {
  if (!ts) return "";
  return new Date(ts * 1000).toLocaleString(currentLanguage());
}

/** Seconds from `start` to `end` (unix times); a running thing counts up to now. */
export function since(start, end) {
  if (!start) return null;
  return (end || Date.now() / 1000) - start;
}

/** The page's monotonic clock in seconds (it does not jump when the computer's clock is set). */
export function monoNow() {
  return performance.now() / 1000;
}

/** Note, once, when the page got a job (and its stages) from the server: their clocks count from then. */
export function received(job) {
  const at = monoNow();
  for (const thing of [job, ...((job && job.stages) || [])]) {
    if (thing && thing._at === undefined) Object.defineProperty(thing, "_at", { value: at, enumerable: false });
  }
  return job;
}

/** Seconds a job or stage has run: the server's `duration` when it was sent plus, while it runs, the time
 *  since then on this page's clock, so a client clock that differs from the server's cannot freeze it. */
export function elapsed(thing) {
  if (!thing || !thing.started_at) return null;
  if (!Number.isFinite(thing.duration)) return since(thing.started_at, thing.finished_at);
  if (thing.finished_at) return thing.duration;
  if (thing._at === undefined) Object.defineProperty(thing, "_at", { value: monoNow(), enumerable: false });
  return thing.duration + (monoNow() - thing._at);
}

/** A span showing how long a job or stage has run; `tickClocks` keeps the running ones counting. */
export function clockSpan(thing) {
  const span = document.createElement("span");
  span.className = "clock";
  span.textContent = duration(elapsed(thing));
  if (thing && thing.started_at && !thing.finished_at) {
    span.dataset.live = "1";
    span.clock = thing;
  }
  return span;
}

/** Advance every running clock under `root` to now (called each second). */
export function tickClocks(root = document) {
  for (const span of root.querySelectorAll(".clock[data-live]")) span.textContent = duration(elapsed(span.clock));
}
