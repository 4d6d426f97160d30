"""Train a Qwen-Image LoRA (the seed's command; same flags as the reference trainer). See --help."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from qwen_image_studio.params.spec import Stage  # noqa: E402
from qwen_image_studio.stages.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(Stage.TRAIN))
