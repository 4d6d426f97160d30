"""Start the Qwen-Image Studio web UI (the seed's command): http://127.0.0.1:5000. See --help."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from qwen_image_studio.webui.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
