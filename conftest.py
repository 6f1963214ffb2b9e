# Loads the harness's pytest plugin for the suites (and the unit tests) of this checkout. It is
# not registered as an installed pytest11 plugin on purpose: its options then exist only where
# these suites run, and another project's pytest in the same environment never sees them.
pytest_plugins = ["harness.plugin"]
