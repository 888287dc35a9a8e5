"""The schemathesis checks and schema loader that tests/integration/test_openapi.py and
scripts/fuzz-run.py share."""
from __future__ import annotations

import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_headers_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]
MAX_EXAMPLES = 40


def load_schema(port: int):
    url = f"http://127.0.0.1:{port}/api/openapi.json"
    config = schemathesis.Config.from_dict({
        "generation": {"max-examples": MAX_EXAMPLES},
        "request-timeout": 30,
    })
    return schemathesis.openapi.from_url(url, config=config, timeout=30)
