"""Start the Qwen-Image Studio web UI (the seed's command): http://127.0.0.1:5000. See --help."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also under python -I
import studio_launch  # noqa: E402

if __name__ == "__main__":
    studio_launch.prepare(__file__)  # re-runs under the repo's .venv when this Python lacks the project
    from qwen_image_studio.webui.main import main

    sys.exit(main(sys.argv[1:]))
