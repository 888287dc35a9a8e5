import pytest

# pytest explains a failed assert only in the modules it rewrites: test modules and
# those registered here. helpers.py's asserts (check() above all) fail inside tests.
pytest.register_assert_rewrite("tests.unit.helpers")
