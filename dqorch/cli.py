"""Console entry point: gevent must patch the stdlib before anything imports it."""
from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from .app import main as _main  # noqa: E402


def main() -> None:
    sys.exit(_main())
