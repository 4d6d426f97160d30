"""Jobs: stage processes run one at a time, their state in SQLite, their logs and events tailed live."""
