"""Caption images with Qwen2.5-VL (the reference trainer's command and flags, plus --dataset_config,
--overwrite, --edit_pairs ...). See --help."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also under python -I
import studio_launch  # noqa: E402

if __name__ == "__main__":
    studio_launch.prepare(__file__)  # re-runs under the repo's .venv when this Python lacks the project
    from qwen_image_studio.params.spec import Stage
    from qwen_image_studio.stages.runner import main

    sys.exit(main(Stage.CAPTION))
