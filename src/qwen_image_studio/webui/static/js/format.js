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
