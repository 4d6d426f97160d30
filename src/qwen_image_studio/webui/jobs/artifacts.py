"""Files a job announced (LoRA checkpoints, sample images), limited to its own output (run) folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...events import read_events
from ...params.spec import Stage
from ..paths import inside, resolve_in
from .store import Job

DOWNLOADABLE = ("checkpoint", "sample", "image", "grid")
# What an artifact event tells about its file (see ``events``): a sample's prompt, index and step; a
# checkpoint's validation loss (``training.validation``), when training has validation data.
DETAILS = ("prompt", "index", "step", "validation_loss")


@dataclass(frozen=True)
class Artifact:
    """One announced file inside the job's output folder."""

    kind: str
    name: str  # relative to the output folder, POSIX separators
    path: Path
    details: dict[str, object] = field(default_factory=dict)  # see DETAILS

    def as_json(self) -> dict[str, object]:
        """Name, kind, size (None when the file is gone) and the event's details."""
        try:
            size: int | None = self.path.stat().st_size
        except OSError:
            size = None
        return {**self.details, "kind": self.kind, "name": self.name, "size": size}


def output_dir_of(job: Job, workspace: Path) -> Path | None:
    """The folder a job's files lie in: its run folder (the --output_dir its train stage got), or for a job
    from before run folders the output folder of its configuration snapshot; None when it has neither."""
    value = job.params.get("save_path") if job.kind == Stage.GENERATE.value else None
    value = value or job.run_dir or job.params.get("output_dir")
    return resolve_in(workspace, value) if isinstance(value, str) and value else None


def artifacts(job: Job, events_file: Path, workspace: Path) -> list[Artifact]:
    """Checkpoints and samples the job announced that lie inside its output folder (latest first per name)."""
    root = output_dir_of(job, workspace)
    if root is None:
        return []
    found: dict[str, Artifact] = {}
    for event in read_events(events_file)[0]:
        kind, raw = event.get("kind"), event.get("path")
        if event.get("type") != "artifact" or kind not in DOWNLOADABLE or not isinstance(raw, str):
            continue
        path = resolve_in(workspace, raw)
        if inside(path, root) and path != root.resolve():
            name = path.relative_to(root.resolve()).as_posix()
            details = {k: event[k] for k in DETAILS if k in event}
            found[name] = Artifact(str(kind), name, path, details)
    return list(found.values())


def find_artifact(job: Job, events_file: Path, workspace: Path, name: str, kind: str) -> Artifact | None:
    """The announced file of that name and kind, if it exists inside the job's output folder."""
    for artifact in artifacts(job, events_file, workspace):
        if artifact.name == name and artifact.kind == kind and artifact.path.is_file():
            return artifact
    return None


CAPTION_KINDS = ("caption", "caption_preview")
CAPTIONS_SHOWN = 50


def captions_of(events_file: Path) -> dict[str, object]:
    """The captions a captioning job announced: the latest ``captions`` (image, caption, whether written)
    and how many in all (``captions_total``); nothing for other jobs."""
    found = [
        {"image": e.get("image"), "caption": e.get("caption"), "written": e.get("kind") == "caption"}
        for e in read_events(events_file)[0]
        if e.get("type") == "artifact" and e.get("kind") in CAPTION_KINDS
    ]
    return {"captions": found[-CAPTIONS_SHOWN:], "captions_total": len(found)} if found else {}
