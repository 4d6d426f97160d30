// The header's live GPU panel (memory used / total, utilisation, temperature of each GPU, read by the server
// through NVML: GET /api/gpu every 2 s) or "CPU only"; and the peak GPU memory of the watched job.
import { api } from "./api.js";
import { $ } from "./dom.js";
import { t } from "./i18n.js";

const POLL_MS = 2000;
let status = null;
let job = null;

const gb = (bytes) => (bytes / 1e9).toFixed(1);
const known = (value) => (value === null || value === undefined ? "–" : value);

function renderChip() {
  const chip = $("gpu-chip");
  if (!status) return;
  chip.hidden = false;
  chip.dataset.state = status.state;
  if (status.state === "gpu") {
    chip.textContent = status.gpus.map((g) => t("gpu.reading", {
      index: g.index, used: gb(g.memory_used), total: gb(g.memory_total), util: known(g.utilization), temp: known(g.temperature),
    })).join(" | ");
    chip.title = status.gpus.map((g) => t("gpu.reading_title", { name: g.name })).join("\n");
  } else if (status.state === "cpu_only") {
    chip.textContent = t("gpu.cpu_only");
    chip.title = t("gpu.cpu_only_title", { reason: status.reason || "" });
  } else {
    chip.textContent = t("gpu.error");
    chip.title = status.reason || "";
  }
}

function renderPeak() {
  const line = $("job-gpu-peak");
  const bytes = job ? job.peak_gpu_memory_bytes : null;
  line.hidden = bytes === null || bytes === undefined;
  line.textContent = line.hidden ? "" : t("gpu.job_peak", { gb: gb(bytes), stage: t(`stage.${job.peak_gpu_memory_stage}`) });
}

async function poll() {
  if (!document.hidden || !status) {
    const res = await api("GET", "/api/gpu");
    if (res.ok) { status = res.data; renderChip(); }
  }
  if (status && status.state === "cpu_only") return;  // the server reads NVML once: no GPU now, none later
  setTimeout(poll, POLL_MS);
}

/** The peak GPU memory of a job (its details from GET /api/jobs/<id>), or none. */
export function showJobPeak(details) {
  job = details;
  renderPeak();
}

/** Start polling the GPUs; retranslate when the language changes. */
export function startGpuChip() {
  $("lang-select").addEventListener("change", () => { renderChip(); renderPeak(); });
  poll();
}
