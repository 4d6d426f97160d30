// The log on screen: lines batched into one DOM update per animation frame, at most `cap` of them kept.
import { LogBuffer } from "./log-model.js";
import { t } from "./i18n.js";

// The supervisor's lines start with the seed's legend: ✅ a stage is done, ❌ it failed, ⏰ a warning.
const MARKS = { "✅": "done", "❌": "failed", "⏰": "warning" };
// A line longer than this (a stage's ~1,500-character command line) shows folded to one line; a click
// or Enter unfolds it. The text stays the line's own, so copying and searching see all of it.
export const FOLD_AT = 240;

export class LogView {
  constructor(box, skippedNote, follow, cap) {
    this.box = box;
    this.skippedNote = skippedNote;
    this.follow = follow;
    this.cap = cap;
    this.buffer = new LogBuffer(cap);
    this.pending = [];
    this.frame = null;
    this.partialEl = null;
    const toggle = (line) => {
      if (!line || !line.classList.contains("foldable")) return;
      line.classList.toggle("open");
      line.setAttribute("aria-expanded", String(line.classList.contains("open")));
    };
    box.addEventListener("click", (e) => {
      if (!window.getSelection().isCollapsed) return; // selecting text is not a click to fold
      toggle(e.target.closest(".line"));
    });
    box.addEventListener("keydown", (e) => {
      if ((e.key === "Enter" || e.key === " ") && e.target.classList.contains("foldable")) {
        toggle(e.target);
        e.preventDefault();
      }
    });
  }

  reset() {
    this.buffer.reset();
    this.pending = [];
    this.box.replaceChildren();
    this.partialEl = null;
    this.renderNote();
  }

  /** The last line number the page has (what a reconnect asks to continue after). */
  lastLine() { return this.buffer.last; }

  apply(message) {
    const { added } = this.buffer.apply(message);
    for (const line of added) this.pending.push(line);
    if (this.pending.length > this.cap) this.pending.splice(0, this.pending.length - this.cap);
    if (this.frame === null) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = null;
    const stick = this.follow.checked;
    if (this.partialEl) { this.partialEl.remove(); this.partialEl = null; }
    const fragment = document.createDocumentFragment();
    for (const [n, text] of this.pending) {
      const div = document.createElement("div");
      div.className = "line";
      div.dataset.n = String(n);
      div.textContent = text;
      const mark = MARKS[String(text).slice(0, 1)];
      if (mark) div.dataset.mark = mark;
      if (String(text).length > FOLD_AT) this.fold(div);
      fragment.append(div);
    }
    this.pending = [];
    this.box.append(fragment);
    let extra = this.box.childElementCount - this.cap;
    while (extra > 0 && this.box.firstElementChild) { this.box.firstElementChild.remove(); extra -= 1; }
    const partial = this.buffer.partial;
    if (partial) {
      this.partialEl = document.createElement("div");
      this.partialEl.className = "line partial";
      this.partialEl.dataset.n = String(partial[0]);
      this.partialEl.textContent = partial[1];
      this.box.append(this.partialEl);
    }
    this.renderNote();
    if (stick) this.box.scrollTop = this.box.scrollHeight;
  }

  fold(div) {
    div.classList.add("foldable");
    div.tabIndex = 0;
    div.setAttribute("role", "button");
    div.setAttribute("aria-expanded", "false");
    div.title = t("log.fold", { count: div.textContent.length });
  }

  /** Re-word what the log box says itself (the note and the folded lines' hint). */
  retranslate() {
    this.renderNote();
    for (const div of this.box.querySelectorAll(".line.foldable")) div.title = t("log.fold", { count: div.textContent.length });
  }

  renderNote() {
    const hidden = this.buffer.hidden();
    this.skippedNote.hidden = hidden <= 0;
    this.skippedNote.textContent = hidden > 0 ? t("log.skipped", { count: hidden }) : "";
  }
}
