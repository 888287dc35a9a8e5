#!/usr/bin/env python3
"""Run the orchestrator: python dqorch.py -c config.yaml"""
from gevent import monkey

monkey.patch_all()    # first: everything imported below must see the patched stdlib

from dqorch.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
