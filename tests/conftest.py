"""gevent patches the stdlib before any test module imports it (the node under test
and the test clients run on the same hub)."""
from gevent import monkey

monkey.patch_all()
