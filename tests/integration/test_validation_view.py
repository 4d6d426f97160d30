"""What the page does with validation losses, without a browser: the chart's columns (node) and the job's
file list from its events (the checkpoint's ``validation_loss`` reaches ``/api/jobs/<id>`` ``files``)."""

from __future__ import annotations

import json
from pathlib import Path

from node_support import node

from qwen_image_studio.webui.jobs.artifacts import artifacts
from qwen_image_studio.webui.jobs.store import Job

JS = Path(__file__).resolve().parents[2] / "src" / "qwen_image_studio" / "webui" / "static" / "js"


def test_the_chart_aligns_validation_points_with_the_training_steps() -> None:
    script = f"""
import {{ chartData, lowestValidation, lossText }} from "{JS / "validation-model.js"}";
const out = [];
out.push(chartData([1, 2, 3], [0.9, 0.8, 0.7], [0.9, 0.85, 0.8], new Map()));
out.push(chartData([1, 2, 3], [0.9, 0.8, 0.7], [0.9, 0.85, 0.8], new Map([[2, 0.5], [5, 0.4]])));
out.push(lowestValidation([{{ validation_loss: 0.5 }}, {{}}, {{ validation_loss: 0.25 }}, {{ validation_loss: 0.25 }}]));
out.push(lowestValidation([{{ name: "a" }}]));
out.push(lossText(0.123456789));
console.log(JSON.stringify(out));
"""
    plain, merged, best, none, text = node(script)
    assert plain == [[1, 2, 3], [0.9, 0.8, 0.7], [0.9, 0.85, 0.8], [None, None, None]]
    # a validation-only step (a resumed run's first evaluation, say) becomes a column of its own
    assert merged == [[1, 2, 3, 5], [0.9, 0.8, 0.7, None], [0.9, 0.85, 0.8, None], [None, 0.5, None, 0.4]]
    assert best == 0.25 and none is None and text == "0.123457"


def test_a_checkpoints_validation_loss_is_a_detail_of_its_file(tmp_path: Path) -> None:
    out = tmp_path / "output" / "job-1"
    out.mkdir(parents=True)
    events = tmp_path / "events.jsonl"
    lines = [
        {"type": "artifact", "kind": "checkpoint", "path": str(out / "a-000001.safetensors"), "validation_loss": 0.5},
        {"type": "metric", "step": 6, "validation_loss": 0.5},
        {"type": "artifact", "kind": "checkpoint", "path": str(out / "a.safetensors")},
    ]
    events.write_text("".join(json.dumps(e) + "\n" for e in lines), encoding="utf-8")
    job = Job(1, "train_network", "done", None, {}, 1.0, 1.0, 2.0, False, run_dir=str(out))
    files = {a.name: a.as_json() for a in artifacts(job, events, tmp_path)}
    assert files["a-000001.safetensors"]["validation_loss"] == 0.5
    assert "validation_loss" not in files["a.safetensors"]  # a run without validation data has none
