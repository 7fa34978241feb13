"""Siyu (私域): a multi-tenant WeChat CRM."""

import os

# Piccolo finds its engine through this module path; every entry point (CLI, app, worker, tests) needs it.
os.environ.setdefault("PICCOLO_CONF", "siyu.piccolo_conf")

__version__ = "0.1.0"
