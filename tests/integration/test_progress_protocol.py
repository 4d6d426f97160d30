"""What training tells the UI about its progress (events.py): the main phase "train" only grows, sampling and
saving are sub-phases marked ``sub`` with the step they belong to, and each sample names its prompt and step;
the job details API passes those on. The page's side (job-progress.js, samples-model.js) runs in node."""

from __future__ import annotations

from pathlib import Path

import pytest
import train_support as ts
from node_support import node

from qwen_image_studio.events import EventWriter, ProgressTracker, read_events
from qwen_image_studio.webui.jobs.artifacts import artifacts
from qwen_image_studio.webui.jobs.store import Job

STATIC = Path(__file__).resolve().parents[2] / "src" / "qwen_image_studio" / "webui" / "static" / "js"


def test_training_reports_sampling_and_saving_as_sub_phases(demo: Path, t2i: Path, tmp_path: Path) -> None:
    argv = ts.train_argv(
        demo,
        t2i,
        tmp_path,
        max_train_steps=None,
        max_train_epochs=2,
        save_every_n_epochs=1,
        sample_prompts=demo / "sample_prompts_t2i.txt",
        sample_every_n_epochs=1,
        output_name="p",
    )
    assert ts.train(argv) == 0, ts.failure(tmp_path / "events.jsonl")
    events = ts.events_of(tmp_path / "events.jsonl")
    progress = [e for e in events if e["type"] == "progress"]
    main = [e for e in progress if not e.get("sub")]
    assert {e["phase"] for e in main} == {"train"}
    assert [e["done"] for e in main] == sorted(e["done"] for e in main) and main[-1]["done"] == 12
    sub = [e for e in progress if e.get("sub")]
    assert {e["phase"] for e in sub} == {"sample", "save"}
    assert {(e["phase"], e["step"]) for e in sub} == {
        ("sample", 6),
        ("sample", 12),
        ("save", 6),
        ("save", 12),
    }
    samples = [e for e in events if e["type"] == "artifact" and e["kind"] == "sample"]
    prompts = [line.split(" --")[0] for line in (demo / "sample_prompts_t2i.txt").read_text().splitlines()]
    assert [(e["step"], e["index"], e["prompt"]) for e in samples] == [
        (step, i, prompts[i]) for step in (6, 12) for i in range(2)
    ]
    # the details API lists each sample with what its event said
    job = Job(1, "train_network", "done", None, {"output_dir": str(tmp_path)}, 0.0, 0.0, 1.0, False)
    listed = [a.as_json() for a in artifacts(job, tmp_path / "events.jsonl", tmp_path) if a.kind == "sample"]
    assert [(a["name"], a["step"], a["index"], a["prompt"]) for a in listed] == [
        (f"sample/p_{step:06d}_{i:02d}.png", step, i, prompts[i]) for step in (6, 12) for i in range(2)
    ]


def test_a_resumed_tracker_counts_its_rate_from_where_it_began(tmp_path: Path) -> None:
    events = EventWriter(tmp_path / "e.jsonl", "train_network")
    tracker = ProgressTracker(events, total=10, phase="train", unit="step", interval=0, done=6,
                              extra={"sub": True, "step": 3})  # fmt: skip
    tracker.start -= 10  # as if it had begun 10 s ago
    tracker.advance()
    events.close()
    first, second = read_events(tmp_path / "e.jsonl")[0]
    assert first["done"] == 6 and second["done"] == 7 and first["sub"] is second["sub"] is True
    assert second["step"] == 3
    # one step done in this run, in 10 s: the rate counts that one, not the six before it
    assert second["rate"] == pytest.approx(0.1, rel=0.01) and second["eta"] == pytest.approx(30, abs=0.2)


def test_the_job_bar_counts_stages_and_steps_and_never_goes_back() -> None:
    script = f"""
import {{ JobProgress }} from "{(STATIC / "job-progress.js").as_uri()}";
const stages = (...s) => s.map((status, i) => ({{ stage: ["cache_latents", "cache_text", "train"][i], status }}));
const job = (status, ...s) => ({{ status, stages: stages(...s) }});
const p = new JobProgress();
const out = [];
const at = (j, now) => {{ const s = p.state(j, now); out.push([+s.fraction.toFixed(4), s.index, s.pending,
  s.sub ? s.sub.phase : null, s.eta === null ? null : +s.eta.toFixed(2)]); }};
at(job("running", "running", "pending", "pending"), 0);
p.add({{ stage: "cache_latents", phase: "cache latents", done: 3, total: 6, eta: 10, t: 1 }}, 1);
at(job("running", "running", "pending", "pending"), 4);           // half of stage 1 of 3; ETA counted down
at(job("running", "done", "running", "pending"), 5);              // stage 2 begins: 1/3
p.add({{ stage: "train", phase: "train", done: 0, total: 12, eta: null, t: 2 }}, 6);
at(job("running", "done", "done", "running"), 6);
p.add({{ stage: "train", phase: "train", done: 4, total: 12, eta: 8, t: 3 }}, 7);
p.add({{ stage: "train", phase: "sample", sub: true, step: 6, done: 2, total: 8, t: 4 }}, 8);
at(job("running", "done", "done", "running"), 8);                 // sampling at step 6: the bar is at 6 / 12
p.add({{ stage: "train", phase: "sample", sub: true, step: 6, done: 8, total: 8, t: 5 }}, 9);
p.add({{ stage: "train", phase: "train", done: 5, total: 12, eta: 7, t: 5.5 }}, 9);  // a lagging report
at(job("running", "done", "done", "running"), 9);                 // sampling over; the bar does not go back
p.add({{ stage: "train", phase: "save", sub: true, step: 12, done: 0, total: 1, t: 6 }}, 10);
at(job("running", "done", "done", "running"), 10);
at(job("failed", "done", "done", "failed"), 11);                  // a failed job's bar stays where it was
at(job("done", "done", "done", "done"), 12);
const q = new JobProgress();
q.add({{ stage: "cache_latents", phase: "cache latents", done: 5, total: 10, eta: 3, t: 1 }}, 0);
q.state(job("running", "running", "pending", "pending"), 0);
out.push(+q.state(job("stopped", "stopped", "skipped", "skipped"), 1).fraction.toFixed(4));  // not forward
console.log(JSON.stringify(out));
"""
    out = node(script)
    assert out[0] == [0, 0, 2, None, None]
    assert out[1] == [pytest.approx(1 / 6, abs=1e-4), 0, 2, None, 7.0]
    assert out[2] == [pytest.approx(1 / 3, abs=1e-4), 1, 1, None, None]
    assert out[3] == [pytest.approx(2 / 3, abs=1e-4), 2, 0, None, None]
    assert out[4] == [pytest.approx(2 / 3 + 1 / 6, abs=1e-4), 2, 0, "sample", 7.0]
    assert out[5] == [pytest.approx(2 / 3 + 1 / 6, abs=1e-4), 2, 0, None, 7.0]
    assert out[6][0] == pytest.approx(1.0, abs=1e-4) and out[6][3] == "save"
    assert out[7][0] == pytest.approx(1.0, abs=1e-4) and out[8][0] == 1
    assert out[9] == pytest.approx(1 / 6, abs=1e-4)


def test_samples_are_grouped_by_prompt_with_the_newest_step_first() -> None:
    script = f"""
import {{ sampleGrid }} from "{(STATIC / "samples-model.js").as_uri()}";
const files = [
  {{ kind: "sample", name: "sample/demo_000006_00.png", step: 6, index: 0, prompt: "a red square" }},
  {{ kind: "sample", name: "sample/demo_000006_01.png", step: 6, index: 1, prompt: "a blue circle" }},
  {{ kind: "sample", name: "sample/demo_000012_01.png", step: 12, index: 1, prompt: "a blue circle" }},
  {{ kind: "sample", name: "sample/demo_000012_00.png" }},            // an older job: read from the name
  {{ kind: "sample", name: "sample/odd.png" }},
];
const g = sampleGrid(files);
console.log(JSON.stringify({{ steps: g.steps, rows: g.rows.map((r) => [r.index, r.prompt,
  Object.keys(r.cells).map(Number).sort((a, b) => b - a), r.loose.map((i) => i.file.name)]) }}));
"""
    out = node(script)
    assert out["steps"] == [12, 6]
    assert out["rows"] == [
        [0, "a red square", [12, 6], []],
        [1, "a blue circle", [12, 6], []],
        [None, None, [], ["sample/odd.png"]],
    ]
