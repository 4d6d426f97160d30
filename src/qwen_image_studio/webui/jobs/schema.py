"""The SQLite tables of jobs (one upgrade step of the studio's store) and the names of their states."""

from __future__ import annotations

from ...params.spec import Stage

JOBS_MIGRATION = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    config_name TEXT,
    params TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    stop_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_status ON jobs (status, id);
CREATE TABLE job_stages (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    stage TEXT NOT NULL,
    argv TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    pid_start TEXT,
    started_at REAL,
    finished_at REAL,
    exit_code INTEGER,
    reason TEXT,
    field TEXT,
    log_tail TEXT,
    PRIMARY KEY (job_id, idx)
);
"""
# A later step: each stage's failure reason also as a structured message (JSON {"key", "vars"}) that the
# page renders in its language; `reason` keeps the English text.
JOBS_REASON_I18N = "ALTER TABLE job_stages ADD COLUMN reason_i18n TEXT;"
# A later step: the job's run folder, the --output_dir its train stage got (`<output_dir>/job-<id>`, see
# supervisor.run_folder). NULL for a job without a train stage, and for jobs from before run folders, whose
# files lie in the output_dir of their configuration snapshot.
JOBS_RUN_DIR = "ALTER TABLE jobs ADD COLUMN run_dir TEXT;"

PIPELINE = "pipeline"
CAPTION_PREVIEW = "caption_preview"  # captions the first few images of the dataset and writes nothing
# What each kind of job runs, in order.
JOB_KINDS: dict[str, tuple[Stage, ...]] = {
    Stage.CACHE_LATENTS.value: (Stage.CACHE_LATENTS,),
    Stage.CACHE_TEXT.value: (Stage.CACHE_TEXT,),
    Stage.TRAIN.value: (Stage.TRAIN,),
    PIPELINE: (Stage.CACHE_LATENTS, Stage.CACHE_TEXT, Stage.TRAIN),
    Stage.CAPTION.value: (Stage.CAPTION,),
    CAPTION_PREVIEW: (Stage.CAPTION,),
    Stage.GENERATE.value: (Stage.GENERATE,),  # run by the generation worker (models kept loaded)
}
# Every stage the web UI can launch (in pipeline order); parameters of no such stage are not in its form.
UI_STAGES: tuple[Stage, ...] = tuple(dict.fromkeys(s for stages in JOB_KINDS.values() for s in stages))

# Job states: queued -> running -> done | failed | stopped | lost.
QUEUED, RUNNING, DONE, FAILED, STOPPED, LOST = "queued", "running", "done", "failed", "stopped", "lost"
# Stage states add pending (not reached yet) and skipped (not run because an earlier stage ended the job).
PENDING, SKIPPED = "pending", "skipped"
FINAL = frozenset({DONE, FAILED, STOPPED, LOST})
ACTIVE = frozenset({QUEUED, RUNNING})
# The seed's log legend: ✅ a stage is done, ❌ it failed, ⏰ a timeout or another warning (stopped, lost,
# or silent for too long). The job log's closing line of each stage starts with its icon.
STATUS_ICONS = {DONE: "✅", FAILED: "❌", STOPPED: "⏰", LOST: "⏰"}
WARNING_ICON = "⏰"
