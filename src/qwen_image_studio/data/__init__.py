"""Dataset configuration (TOML), buckets, captions, control images and cache files.

Modules (none imports torch, so the web UI may use them all):

* ``config``: the ``[general]`` / ``[[datasets]]`` TOML users of the reference trainer write;
  ``load_dataset_config`` / ``parse_dataset_config`` / ``write_dataset_config``.
* ``buckets``: pure bucket math (the reference trainer's rule), resize-to-cover and centre-crop plans.
* ``images``: image extensions, lazy size probing (EXIF orientation applied), loading into a bucket.
* ``items``: ``discover_items`` finds images, captions and control images and lists what is unusable;
  items present but unreadable (corrupt image, caption not UTF-8) are reported with their cause and
  named in ``kept_keys``, whose cache files are never stale.
* ``cache_paths``: cache file names (``{basename}_{W:04d}x{H:04d}_qi.safetensors``, ``{basename}_qi_te.safetensors``,
  ``qie`` in edit mode) and present / missing / outdated / stale checks; outdated means another bucket,
  caption, target image (recorded as ``image_sha256``) or (edit mode) control image, recorded as
  ``control_sha256``.
* ``inspect``: ``dataset inspect``: ``inspect_dataset``, ``format_report``, ``run_inspect``.
"""
