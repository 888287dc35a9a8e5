from setuptools import find_packages, setup

setup(
    name="dqorch",
    version="0.1.0",
    description="DistriQueue orchestrator: durable job registry, RabbitMQ routing, Raft log",
    packages=find_packages(include=["dqorch", "dqorch.*"]),
    package_data={"dqorch": ["ui/*"]},      # the web console's static files
    py_modules=[],
    python_requires=">=3.11",
    install_requires=[
        "gevent>=24.2",
        "bottle>=0.13",
        "pika>=1.3",
        "prometheus-client>=0.20",
        "PyYAML>=6.0",
        # JSON ~10x faster than the stdlib, and orjson.Fragment splices the stored
        # payloads into answers undecoded (README, Dependencies; docs/BENCHMARKS.md).
        "orjson>=3.9",
        # Cron specs for schedules (README, Dependencies): one file, no dependencies,
        # Debian cron's DST rules, zones from the standard zoneinfo.
        "cronsim>=2.6",
        # The HTTP/1.1 parser of http_fast.py (config http_server: httptools): llhttp,
        # Node's parser in C, as uvicorn uses it (docs/DESIGN-NOTES.md, HTTP).
        "httptools>=0.6",
    ],
    # pytest < 9.1: schemathesis 4.32 reads Function._nodeid, which pytest 9.1 removed.
    extras_require={"test": ["pytest>=8,<9.1", "hypothesis>=6", "schemathesis>=4.0", "jsonschema>=4",
                             "openapi-spec-validator>=0.7",
                             # the web console's tests drive a real headless Chromium
                             "selenium>=4.20"],
                    # bench/chart.py's PNG only; nothing at run time or in the tests
                    "bench": ["matplotlib>=3.8"]},
    # dqorch runs a node; dqctl operates one over its JSON API (README, Command line).
    entry_points={"console_scripts": ["dqorch=dqorch.cli:main", "dqctl=dqorch.ctl:main"]},
)
