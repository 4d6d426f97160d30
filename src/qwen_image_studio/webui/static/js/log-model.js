// The log lines a page keeps: numbered lines from the server, each at most once, the last `cap` of them.
// Pure (no DOM), so it can be tested outside a browser.

export class LogBuffer {
  constructor(cap) {
    this.cap = cap;
    this.reset();
  }

  reset() {
    this.last = 0; // the highest line number received (or skipped)
    this.lines = []; // [number, text] pairs kept, oldest first
    this.partial = null; // [number, text] of the unfinished last line, or null
  }

  /** Apply one "log" message; returns {added, dropped}: new lines in order and how many old ones fell off. */
  apply(message) {
    if (message.skipped) this.last = Math.max(this.last, message.skipped[1]);
    const added = [];
    for (const [n, text] of message.lines || []) {
      if (n <= this.last) continue; // a line already shown is never shown twice
      this.last = n;
      added.push([n, text]);
      this.lines.push([n, text]);
    }
    let dropped = 0;
    if (this.lines.length > this.cap) {
      dropped = this.lines.length - this.cap;
      this.lines.splice(0, dropped);
    }
    if ("partial" in message) this.partial = message.partial && message.partial[0] > this.last ? message.partial : null;
    else if (this.partial && this.partial[0] <= this.last) this.partial = null;
    return { added, dropped };
  }

  /** How many lines before the first kept one are not shown. */
  hidden() {
    return this.lines.length ? this.lines[0][0] - 1 : this.last;
  }
}
