import sys
from pathlib import Path

# The repository root, so the packages import without an install.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

pytest_plugins = ["closum_sandbox.pytest_plugin"]
