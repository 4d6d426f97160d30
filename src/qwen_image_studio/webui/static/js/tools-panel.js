// Beside the form: the live memory estimate (for the chosen files, where they run, which GPU sizes fit), the
// GPU presets, and TensorBoard's status and link.
import { api } from "./api.js";
import { $, el } from "./dom.js";
import { t } from "./i18n.js";

const TB_POLL_MS = 3000;

/** GB with one decimal (two below 1 GB, where a tiny model's estimate would read 0.0). */
function gbText(gb) { return gb < 1 ? gb.toFixed(2) : gb.toFixed(1); }

/** A parameter count in K, M or B. */
function countText(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
  return `${(n / 1e3).toFixed(1)} K`;
}

/** Which common GPU sizes the estimate fits, a preset that makes a smaller one fit, and this machine's GPU. */
function fitsText(v) {
  const sizes = v.sizes.join(", ");
  const lines = [];
  if (v.fits.length === v.sizes.length) lines.push(t("vram.fits_all"));
  else if (v.fits.length) lines.push(t("vram.fits_from", { gb: v.fits[0], sizes }));
  else lines.push(t("vram.fits_none", { gb: v.sizes[v.sizes.length - 1], sizes }));
  if (v.preset) lines.push(t("vram.preset_hint", { gb: v.preset.gpu_gb, est: gbText(v.preset.estimate_gb) }));
  if (v.this_gpu) {
    const key = v.this_gpu.fits ? "vram.this_gpu_fits" : "vram.this_gpu_short";
    lines.push(t(key, { name: v.this_gpu.name, total: v.this_gpu.total_gb }));
  }
  return lines;
}

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
    const cpuOnly = !v.gpu_present;
    $("vram-value").textContent = cpuOnly ? t("vram.value_cpu", { gb: v.ram_gb.toFixed(1) }) : t("vram.value", { gb: gbText(v.peak_gb) });
    const where = $("vram-where");
    where.textContent = cpuOnly ? t("vram.cpu_only", { gb: gbText(v.peak_gb) }) : v.device === "cpu" ? t("vram.device_cpu") : "";
    where.hidden = !where.textContent;
    const dit = v.dit.source === "file"
      ? t("vram.dit.file", { blocks: v.dit.num_layers, width: v.dit.hidden, params: countText(v.dit.params) })
      : t("vram.dit.default");
    $("vram-note").textContent = t("vram.note", { w: v.width, h: v.height, batch: v.batch_size, source: t(`vram.source.${v.source}`), dit });
    const parts = [t("vram.parts", {
      weights: e.weights_gb, act: e.activations_gb, lora: e.lora_gb, swap: e.swap_buffer_gb, fixed: e.fixed_gb,
    })];
    if (e.text_encoder_gb > 0) parts.push(t("vram.sample_te", { te: e.text_encoder_gb }));
    if (v.cache_text_gb !== null) parts.push(t("vram.cache_gpu", { gb: v.cache_text_gb }));
    if (v.vae_gb !== null) parts.push(t("vram.vae", { gb: v.vae_gb }));
    $("vram-parts").textContent = parts.join(" ");
    $("vram-fits").textContent = fitsText(v).join("\n");
    this.titlePresets();
  }

  renderPresets() {
    const box = $("presets");
    box.replaceChildren();
    for (const preset of this.presets) {
      const button = el("button", { type: "button", "data-gpu": preset.gpu_gb }, t("presets.button", { gb: preset.gpu_gb }));
      button.addEventListener("click", () => this.ctx.applyValues(preset.values, t("presets.applied", { gb: preset.gpu_gb })));
      box.append(button);
    }
    this.titlePresets();
  }

  /** Each preset button's title: its estimate for the chosen files (the full-size model's until known). */
  titlePresets() {
    for (const button of $("presets").querySelectorAll("button[data-gpu]")) {
      const gpu = Number(button.dataset.gpu);
      const chosen = this.vram && this.vram.presets.find((p) => p.gpu_gb === gpu);
      const preset = this.presets.find((p) => p.gpu_gb === gpu);
      const gb = chosen ? gbText(chosen.estimate_gb) : preset ? preset.estimate_gb : null;
      button.title = gb === null ? "" : t("vram.value", { gb });
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
