"""A pytest plugin loaded before any other (pytest.ini: -p tests.gevent_first): gevent
must patch the stdlib before plugins such as schemathesis import ssl and threading."""
from gevent import monkey

monkey.patch_all()
