// Beside the form: the live VRAM estimate, the GPU presets, and TensorBoard's status and link.
import { api } from "./api.js";
import { $, el } from "./dom.js";
import { t } from "./i18n.js";

const TB_POLL_MS = 3000;

export class ToolsPanel {
  /** `ctx`: {readValues(), applyValues(values, message), logdirValue()}. */
  constructor(ctx) {
    this.ctx = ctx;
    this.presets = [];
    this.vram = null;
    this.board = null;
    this.seq = 0;
    this.pointedAt = null;
  }

  async start() {
    const res = await api("GET", "/api/presets");
    if (res.ok) this.presets = res.data.presets;
    this.renderPresets();
    this.pollBoard();
  }

  async refreshVram() {
    const seq = ++this.seq;
    const res = await api("POST", "/api/vram", { params: this.ctx.readValues() });
    if (seq !== this.seq || !res.ok) return;
    this.vram = res.data;
    this.renderVram();
  }

  renderVram() {
    const v = this.vram;
    if (!v) return;
    const e = v.estimate;
    $("vram-value").textContent = t("vram.value", { gb: e.total_gb.toFixed(1) });
    $("vram-note").textContent = t("vram.note", { w: v.width, h: v.height, batch: v.batch_size, source: t(`vram.source.${v.source}`) });
    $("vram-parts").textContent = t("vram.parts", {
      weights: e.weights_gb, act: e.activations_gb, lora: e.lora_gb, swap: e.swap_buffer_gb, fixed: e.fixed_gb,
    });
  }

  renderPresets() {
    const box = $("presets");
    box.replaceChildren();
    for (const preset of this.presets) {
      const button = el("button", { type: "button", "data-gpu": preset.gpu_gb }, t("presets.button", { gb: preset.gpu_gb }));
      button.title = t("vram.value", { gb: preset.estimate_gb });
      button.addEventListener("click", () => this.ctx.applyValues(preset.values, t("presets.applied", { gb: preset.gpu_gb })));
      box.append(button);
    }
  }

  /** Take the form's logging folder as the one TensorBoard already shows (on page load: no restart). */
  baseline() { this.pointedAt = this.ctx.logdirValue(); }

  /** Point TensorBoard at the form's logging folder when it changed. */
  async pointBoard() {
    const logdir = this.ctx.logdirValue();
    if (!logdir || logdir === this.pointedAt) return;
    this.pointedAt = logdir;
    const res = await api("POST", "/api/tensorboard", { logdir });
    if (res.ok) { this.board = res.data; this.renderBoard(); }
  }

  async pollBoard() {
    const res = await api("GET", "/api/tensorboard");
    if (res.ok) { this.board = res.data; this.renderBoard(); }
    setTimeout(() => this.pollBoard(), TB_POLL_MS);
  }

  renderBoard() {
    const b = this.board;
    if (!b) return;
    const state = $("tb-state");
    state.textContent = t(`tb.state.${b.state}`);
    state.dataset.state = b.state;
    const titles = [];
    if (b.logdir) titles.push(t("tb.folder", { path: b.logdir }));
    if (b.message) titles.push(b.message);
    // TensorBoard listens on 127.0.0.1: opened from there, link to it directly (and through this server,
    // e.g. for an SSH tunnel to the UI's port only); from elsewhere, through this server (same token).
    const direct = ["127.0.0.1", "localhost"].includes(location.hostname);
    const proxied = new URL(b.proxy_path || "/tensorboard/", location.href).href;
    state.title = titles.join("\n");
    const note = $("tb-note");
    note.hidden = !["port_busy", "failed"].includes(b.state);
    note.textContent = b.state === "port_busy" ? t("tb.busy_note", { port: b.port })
      : b.state === "failed" ? `${t("tb.failed_note")}\n${b.message}` : "";
    const link = $("tb-link");
    link.hidden = !b.enabled || !["running", "starting", "restarting"].includes(b.state);
    link.href = direct ? `http://${location.hostname}:${b.port}/` : proxied;
    link.title = titles.join("\n");
    const viaUi = $("tb-link-ui");
    viaUi.hidden = link.hidden || !direct;
    viaUi.href = proxied;
    viaUi.textContent = new URL(proxied).pathname;
  }

  retranslate() {
    this.renderVram();
    this.renderPresets();
    this.renderBoard();
  }
}
