import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from buzontest import make_server, server  # noqa: E402,F401  (pytest fixtures)
