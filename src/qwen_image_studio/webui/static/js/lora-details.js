// A LoRA's "details" in the job's file list: what its header says (form, modules, rank, alpha, targets,
// training settings) and downloads in the ComfyUI/kohya and diffusers forms (GET /api/lora/info).
import { api } from "./api.js";
import { el } from "./dom.js";
import { bytes } from "./format.js";
import { localText, t } from "./i18n.js";

const TARGETS = ["attention", "mlp", "modulation", "other"];

function row(list, label, value) {
  list.append(el("dt", {}, label), el("dd", {}, value));
}

function rankText(info) {
  if (info.ranks.length <= 1) return String(info.rank);
  return t("lora.ranks_mixed", { ranks: info.ranks.join(", "), rank: info.rank });
}

function alphaText(info) {
  if (!info.alphas.length) return t("lora.alpha_none");
  const alphas = info.alphas.join(", ");
  return info.alpha_source === "header" ? t("lora.alpha_header", { alpha: alphas }) : alphas;
}

function targetText(info) {
  const parts = TARGETS.filter((g) => info.targets[g]).map((g) => `${t(`lora.target.${g}`)} ${info.targets[g]}`);
  return `${parts.join(" · ")} — ${t("lora.blocks", { count: info.blocks })}`;
}

/** A header value as shown: the ss_*_at times (unix seconds) also as a date and time. */
function settingText(key, value) {
  const seconds = Number(value);
  if (!key.endsWith("_at") || !value || !Number.isFinite(seconds)) return value;
  return `${new Date(seconds * 1000).toLocaleString()} (${value})`;
}

/** The panel's content for an answer of /api/lora/info. */
export function renderInfo(data) {
  const info = data.info;
  const facts = el("dl", { class: "lora-facts" });
  row(facts, t("lora.form"), info.form_label);
  row(facts, t("lora.modules"), String(info.modules));
  row(facts, t("lora.rank"), rankText(info));
  row(facts, t("lora.alpha"), alphaText(info));
  row(facts, t("lora.dtype"), info.dtypes.join(", "));
  row(facts, t("lora.size"), bytes(info.file_size));
  row(facts, t("lora.targets"), targetText(info));
  row(facts, t("lora.model_version"), info.model_version || t("lora.unknown"));
  row(facts, t("lora.base_model"), info.base_model || t("lora.unknown"));
  if (info.validation_loss != null) row(facts, t("lora.validation_loss"), info.validation_loss.toPrecision(4));
  const s = info.training || {};
  if (s.ss_steps) row(facts, t("lora.trained"), t("lora.trained_value", { steps: s.ss_steps, epoch: s.ss_epoch ?? "?" }));
  const downloads = el("p", { class: "lora-downloads" }, `${t("lora.download")}: `);
  downloads.append(
    el("a", { href: data.downloads.comfyui, "data-form": "comfyui" }, t("lora.download_comfyui")),
    " · ",
    el("a", { href: data.downloads.diffusers, "data-form": "diffusers" }, t("lora.download_diffusers")),
  );
  const parts = [facts, downloads, el("p", { class: "hint" }, t("lora.download_hint"))];
  const keys = Object.keys(s);
  if (keys.length) {
    const settings = el("dl", { class: "lora-settings" });
    for (const key of keys) row(settings, key, settingText(key, s[key]));
    const box = el("details", { class: "lora-more" });
    box.append(el("summary", {}, t("lora.settings")), settings);
    parts.push(box);
  } else {
    parts.push(el("p", { class: "hint" }, t("lora.no_settings")));
  }
  if (info.training_config) {
    const box = el("details", { class: "lora-more" });
    box.append(el("summary", {}, t("lora.config")), el("pre", { class: "lora-config" }, JSON.stringify(info.training_config, null, 2)));
    parts.push(box);
  }
  return parts;
}

/** The details toggles of one job's LoRA files; which are open (and what was read) survives a re-render. */
export class LoraDetails {
  constructor() {
    this.open = new Set();
    this.answers = new Map();
  }

  /** Forget what was open (another job is shown). */
  reset() {
    this.open.clear();
    this.answers.clear();
  }

  /** A "details" button for the job's LoRA `name` and the panel it opens: [button, panel]. */
  toggle(jobId, name) {
    const key = `${jobId}\n${name}`;
    const button = el("button", { type: "button", class: "small lora-toggle", "aria-expanded": "false", "data-lora": name }, t("lora.details"));
    const panel = el("div", { class: "lora-details", "data-lora": name, hidden: true });
    const show = (open) => {
      button.setAttribute("aria-expanded", String(open));
      button.textContent = t(open ? "lora.hide" : "lora.details");
      panel.hidden = !open;
      if (open) {
        this.open.add(key);
        this.fill(panel, jobId, name, key);
      } else {
        this.open.delete(key);
      }
    };
    button.addEventListener("click", () => show(panel.hidden));
    if (this.open.has(key)) show(true);
    return [button, panel];
  }

  async fill(panel, jobId, name, key) {
    let res = this.answers.get(key);
    if (!res) {
      panel.replaceChildren(el("p", { class: "hint" }, t("lora.loading")));
      res = await api("GET", `/api/lora/info?${new URLSearchParams({ job: jobId, name })}`);
      if (res.ok) this.answers.set(key, res);
    }
    if (res.ok) panel.replaceChildren(...renderInfo(res.data));
    else panel.replaceChildren(el("p", { class: "problem" }, localText(res.data.error, res.data.error_i18n)));
  }
}
