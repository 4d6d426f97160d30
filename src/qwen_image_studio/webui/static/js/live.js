// The live channel: one WebSocket per page, reconnecting by itself and resuming where the page was.
const RETRY_MS = [500, 1000, 2000, 4000];

export class Live {
  /** `handlers`: {message(m), state(connected)}; `position()` -> {job, logAfter, eventsAfter, tail} or null. */
  constructor(handlers, position) {
    this.handlers = handlers;
    this.position = position;
    this.socket = null;
    this.tries = 0;
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws`);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.tries = 0;
      this.handlers.state(true);
      this.resume();
    });
    socket.addEventListener("message", (e) => {
      let message = null;
      try { message = JSON.parse(e.data); } catch (err) { return; }
      this.handlers.message(message);
    });
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.handlers.state(false);
      const wait = RETRY_MS[Math.min(this.tries, RETRY_MS.length - 1)];
      this.tries += 1;
      setTimeout(() => this.connect(), wait);
    });
  }

  /** Ask for the watched job from where the page is (after a reconnect: exactly what it lacks). */
  resume() {
    const pos = this.position();
    if (!pos || !this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    this.socket.send(JSON.stringify({
      type: "watch", job: pos.job, log_after: pos.logAfter, events_after: pos.eventsAfter, tail: pos.tail,
    }));
  }
}
