"""Gate semantics: a run never goes green having tested nothing.

The plugin runs in-process (pytester) on small test files that use only the
`proxy_mode` parameter, so no cluster is made; which modes "cannot run here" is
set by a conftest that replaces the preflight.
"""
import json

import pytest

from harness import config
from harness.gate import EXIT_NOT_RUN, Gate

pytest_plugins = ["pytester"]

# The plugin is loaded by the checkout's conftest, not as an installed pytest11 plugin, so each
# pytester project asks for it the same way.
PLUGIN = 'pytest_plugins = ["harness.plugin"]\n'

PREFLIGHT = PLUGIN + """
from harness import engine
engine.mode_unavailable_reason = lambda mode, ipvs_engine="auto", every_mode_in_guest=False: "no IPVS in this kernel (test)" if mode == "ipvs" else None
"""

TESTS = """
import pytest
from harness import engine

@pytest.fixture
def cluster(proxy_mode):  # stands in for the plugin's: skips a mode the preflight refused
    reason = engine.mode_unavailable_reason(proxy_mode)
    if reason:
        pytest.skip(reason)

@pytest.mark.experiment("E01", "one")
def test_one(cluster):
    pass

@pytest.mark.experiment("E02", "two")
@pytest.mark.modes("ipvs")
def test_two(cluster):
    pass
"""


@pytest.fixture
def suite(pytester):
    pytester.makeconftest(PREFLIGHT)
    pytester.makepyfile(test_suite=TESTS)
    return pytester


def test_unavailable_mode_stops_the_run_with_the_reason(suite):
    res = suite.runpytest_inprocess("--proxy-mode=iptables,ipvs", "-p", "no:cacheprovider")
    assert res.ret == EXIT_NOT_RUN
    res.stderr.fnmatch_lines(["*ipvs: no IPVS in this kernel (test)*", "*--skip-unavailable-modes*"])
    assert "passed" not in res.stdout.str()  # nothing ran


def test_skip_option_runs_the_rest_and_reports_not_run(suite):
    res = suite.runpytest_inprocess("--proxy-mode=iptables,ipvs", "--skip-unavailable-modes",
                                    "-p", "no:cacheprovider")
    assert res.ret == 0
    res.stdout.fnmatch_lines(["*gate: one verdict per mode*",
                              "iptables: PASS (1 passed, 0 failed, 1 skipped)",
                              "ipvs: NOT RUN (0 passed, 0 failed, 2 skipped) -- no IPVS in this kernel (test)"])
    report = (suite.path / "artifacts" / "report.md").read_text()
    assert "**NOT RUN**" in report.split("checks:")[0]          # on top
    assert report.rstrip().endswith("ipvs: NOT RUN (0 passed, 0 failed, 2 skipped) -- no IPVS in this kernel (test)")
    gate = json.loads((suite.path / "artifacts" / "report.json").read_text())["gate"]
    assert gate["iptables"]["verdict"] == "PASS" and gate["ipvs"]["verdict"] == "NOT RUN"


def test_a_mode_where_everything_skipped_is_not_a_pass(suite):
    res = suite.runpytest_inprocess("--proxy-mode=iptables", "--experiments=E02", "-p", "no:cacheprovider")
    assert res.ret == EXIT_NOT_RUN
    res.stdout.fnmatch_lines(["iptables: NOT RUN (0 passed, 0 failed, 1 skipped) -- skipped: experiment applies "
                              "to ipvs only"])


def test_a_failure_is_fail_for_its_mode(pytester):
    pytester.makeconftest(PREFLIGHT)
    pytester.makepyfile("def test_x(proxy_mode):\n    assert proxy_mode != 'nftables'\n")
    res = pytester.runpytest_inprocess("--proxy-mode=iptables,nftables", "-p", "no:cacheprovider")
    assert res.ret == 1
    res.stdout.fnmatch_lines(["iptables: PASS (1 passed, 0 failed, 0 skipped)",
                              "nftables: FAIL (0 passed, 1 failed, 0 skipped)"])


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_unknown_experiment_is_a_usage_error_listing_the_known_ones(suite, xdist, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(config.REPO))  # this checkout's harness, not an installed one
    res = suite.runpytest_subprocess("--experiments=E99,E01", "-p", "no:cacheprovider", *xdist)
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "unknown experiment id(s) E99; the collected tests have E01, E02" in res.stdout.str() + res.stderr.str()


def test_tests_without_a_mode_have_no_gate(pytester):
    pytester.makeconftest(PLUGIN)
    pytester.makepyfile("def test_pure():\n    pass\n")
    res = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert res.ret == 0
    assert "gate: one verdict per mode" not in res.stdout.str()


def test_tally_counts_each_test_once():
    g = Gate(requested=["iptables"])
    g.record("iptables", "setup", "passed")
    g.record("iptables", "call", "passed")
    g.record("iptables", "teardown", "passed")
    g.record("iptables", "setup", "skipped", "no LB")
    g.record("iptables", "call", "passed")
    g.record("iptables", "teardown", "failed")   # an error in teardown is a failure
    assert g.lines() == ["iptables: FAIL (2 passed, 1 failed, 1 skipped)"]


def test_gate_round_trips_through_its_dict():
    from harness.gate import Gate
    g = Gate(requested=["iptables", "ipvs"], unavailable={"ipvs": "no IPVS"})
    g.record("iptables", "call", "passed")
    g.record("iptables", "call", "failed")
    back = Gate.from_dict(g.as_dict())
    assert back.as_dict() == g.as_dict()
    assert back.lines() == g.lines()


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_junit_is_xunit2_with_the_run_facts_as_suite_properties(pytester, xdist, monkeypatch):
    """xunit2 allows <properties> only under <testsuite>; the mode, experiment ids and Kubernetes
    version go there (also from xdist workers' reports)."""
    import xml.etree.ElementTree as ET
    monkeypatch.setenv("PYTHONPATH", str(config.REPO))
    pytester.makeconftest(PREFLIGHT)
    pytester.makepyfile("import pytest\n\n@pytest.mark.experiment('E01', 'x')\n"
                        "def test_x(proxy_mode):\n    pass\n")
    res = pytester.runpytest_subprocess("--proxy-mode=iptables,nftables", "-p", "no:cacheprovider",
                                        "--junitxml=j.xml", "-o", "junit_family=xunit2", *xdist)
    assert res.ret == 0, res.stdout.str()
    root = ET.parse(pytester.path / "j.xml").getroot()
    assert not root.findall(".//testcase/properties")
    props = {p.get("name"): p.get("value") for p in root.findall("./testsuite/properties/property")}
    assert props["svc_harness.proxy_modes"] == "iptables,nftables"
    assert props["svc_harness.experiment.test_x"] == "E01"
    assert props["svc_harness.kubernetes_version"] == config.versions()["KUBERNETES_VERSION"]
