"""Captions from the Qwen2.5-VL file users already have: prompts, image sizing, generation, where captions go.

`vlm` loads ``qwen_2.5_vl_7b.safetensors`` for generation (lm_head and vision tower included, layers placed
on the device as they are read, fp8 with ``--fp8_vl``) and runs transformers' own greedy `generate`;
`prompts` holds the templates and the edit-pair instruction; `sizing` the ``--max_size`` rule; `targets`
finds the images to caption (a folder, or every dataset of a TOML) and writes captions atomically where the
dataset keeps them. The command is ``caption_images_by_qwen_vl.py`` (``stages/caption_images``).
"""
