"""Kube.kubectl runs a command again only when it never reached the API server."""
import pytest

from harness import kube
from harness.runner import CommandError, FakeRunner

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"""
HANDSHAKE = ('error: error validating "STDIN": error validating data: failed to download openapi: '
             'Get "https://10.253.0.2:17146/openapi/v2?timeout=32s": net/http: TLS handshake timeout')


def _kube(tmp_path, monkeypatch, answers):
    """A Kube whose kubectl answers (returncode, stderr) in turn; the last answer repeats."""
    monkeypatch.setattr(kube.time, "sleep", lambda s: None)
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    runner = _InTurn(list(answers))
    return kube.Kube(path, runner=runner), runner


class _InTurn(FakeRunner):
    def __init__(self, answers):
        super().__init__()
        self.answers = answers

    def run(self, argv, **kw):
        rc, err = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        self.responses[:] = [(lambda a: True, "", rc, err)]
        return super().run(argv, **kw)


def test_a_handshake_timeout_is_run_again_and_then_succeeds(tmp_path, monkeypatch):
    k, runner = _kube(tmp_path, monkeypatch, [(1, HANDSHAKE), (0, "")])
    assert k.kubectl("get", "pods").ok
    assert len(runner.calls) == 2


def test_an_unreachable_server_is_tried_a_bounded_number_of_times(tmp_path, monkeypatch):
    k, runner = _kube(tmp_path, monkeypatch, [(1, HANDSHAKE)])
    with pytest.raises(CommandError, match="TLS handshake timeout"):
        k.create_namespace("x")
    assert len(runner.calls) == kube.UNREACHED_ATTEMPTS


@pytest.mark.parametrize("rc, err", [
    (1, 'Error from server (NotFound): pods "x" not found'),  # the server answered
    (124, "Unable to connect to the server\n(timed out after 120s)"),  # it may have run: never twice
])
def test_other_failures_are_not_repeated(tmp_path, monkeypatch, rc, err):
    k, runner = _kube(tmp_path, monkeypatch, [(rc, err)])
    assert not k.kubectl("get", "pod", "x", check=False).ok
    assert len(runner.calls) == 1


def test_a_workload_saying_connection_refused_is_not_run_again(tmp_path, monkeypatch):
    k, runner = _kube(tmp_path, monkeypatch, [(1, "dial tcp 10.96.0.10:80: connect: connection refused")])
    assert not k.kubectl("exec", "p", "--", "probe", check=False).ok
    assert len(runner.calls) == 1


def test_a_rollout_on_a_slow_engine_waits_its_slowdown_longer(tmp_path, monkeypatch):
    """The engine's factor (harness.waits.slower) reaches kubectl's own --timeout."""
    from harness.waits import slower
    k, runner = _kube(tmp_path, monkeypatch, [(0, "")])
    with slower(3):
        k.rollout("demoapp", "ns", timeout=120)
    assert "--timeout=360s" in runner.calls[0]
