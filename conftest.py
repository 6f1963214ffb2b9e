# Makes `pytest suites/ --proxy-mode=...` work from a checkout without installing
# the package: the plugin is loaded from harness/ (an installed copy registers it
# through the pytest11 entry point instead).
import importlib.metadata as _md

try:
    _md.distribution("svc-harness")
    pytest_plugins = []
except _md.PackageNotFoundError:
    pytest_plugins = ["harness.plugin"]
