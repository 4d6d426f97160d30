// Sample images by prompt and step (pure: no DOM, testable in node).
//
// A training sample's artifact tells its prompt, its index among the sample prompts and its step (see
// events.py); a file announced without them (an older job) is read from its name,
// {output_name}_{step:06d}_{index:02d}.png (training/sampling.py), and has no prompt text.

const NAME = /_(\d+)_(\d+)\.png$/i;

/** One sample file as {file, index, step, prompt}; index and step are null when unknown. */
export function sampleInfo(file) {
  const m = NAME.exec(String(file.name).split("/").pop());
  const number = (value, fallback) => (Number.isInteger(value) ? value : fallback);
  return {
    file,
    index: number(file.index, m ? Number(m[2]) : null),
    step: number(file.step, m ? Number(m[1]) : null),
    prompt: typeof file.prompt === "string" ? file.prompt : null,
  };
}

/** The samples as a grid: {steps (newest first), rows: [{index, prompt, cells: {step: info}}]}, rows in
 *  prompt order; a file with no step or index gets a row of its own. */
export function sampleGrid(files) {
  const rows = new Map();
  const steps = new Set();
  let loose = 0;
  for (const info of files.map(sampleInfo)) {
    const key = info.index === null || info.step === null ? `loose-${loose++}` : `p${info.index}`;
    if (!rows.has(key)) rows.set(key, { index: info.index, prompt: info.prompt, cells: {}, loose: [] });
    const row = rows.get(key);
    if (info.prompt !== null) row.prompt = info.prompt;
    if (info.step === null || info.index === null) row.loose.push(info);
    else {
      row.cells[info.step] = info;
      steps.add(info.step);
    }
  }
  const order = (r) => (r.index === null ? Infinity : r.index);
  return {
    steps: [...steps].sort((a, b) => b - a),
    rows: [...rows.values()].sort((a, b) => order(a) - order(b)),
  };
}
