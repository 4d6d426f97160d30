"""The event protocol: JSON lines written by stages, read incrementally by the UI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from qwen_image_studio.events import EventWriter, ProgressTracker, read_events

ROOT = Path(__file__).resolve().parents[2]


def test_events_are_json_lines_read_incrementally(tmp_path: Path) -> None:
    path = tmp_path / "ev" / "events.jsonl"
    w = EventWriter(path, "cache_latents")
    w.emit("started", pid=1)
    w.artifact("cache", tmp_path / "a.safetensors")
    events, offset = read_events(path)
    assert [e["type"] for e in events] == ["started", "artifact"]
    assert all(e["stage"] == "cache_latents" and e["t"] > 0 for e in events)
    # a partial last line is left for the next read, nothing is lost or doubled
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"type": "warn')
    more, offset2 = read_events(path, offset)
    assert more == [] and offset2 == offset
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('ing", "message": "x"}\n')
    more, _ = read_events(path, offset2)
    assert [e["type"] for e in more] == ["warning"]
    w.close()


def test_progress_reports_rate_and_eta_and_final_count(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    w = EventWriter(path, "train_network")
    tracker = ProgressTracker(w, total=5, phase="train", unit="step", interval=0.0)
    for _ in range(5):
        tracker.advance(loss=0.5)
    tracker.close()
    events, _ = read_events(path)
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[0]["done"] == 0 and progress[-1]["done"] == 5 and progress[-1]["total"] == 5
    assert progress[-1]["eta"] == 0 and progress[-1]["rate"] > 0 and progress[-1]["loss"] == 0.5
    assert list(w.progress(range(3), total=3, phase="x")) == [0, 1, 2]


def test_failed_run_writes_a_failed_event_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "qwen_image_train_network.py"),
            "--events_file",
            str(path),
            "--blocks_to_swap",
            "99",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    events, _ = read_events(path)
    assert events[-1]["type"] == "failed" and events[-1]["exit_code"] == 2
    assert "--blocks_to_swap: 99 is out of range; allowed 0 to 59" in events[-1]["reason"]
    json.dumps(events)
