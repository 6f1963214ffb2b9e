"""Kube.kubectl runs a command again only when it never reached the API server, or when an
idempotent write met etcd too slow to store it."""
import pytest

from harness import kube, waits
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


def _kube(tmp_path, monkeypatch, answers, ready=True):
    """A Kube whose kubectl answers (returncode, stderr) in turn; the last answer repeats.
    /readyz answers `ready` (not counted in `runner.calls`)."""
    monkeypatch.setattr(waits.time, "sleep", lambda s: None)
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    runner = _InTurn(list(answers), ready)
    return kube.Kube(path, runner=runner), runner


class _InTurn(FakeRunner):
    def __init__(self, answers, ready):
        super().__init__()
        self.answers, self.ready, self.readyz = answers, ready, 0

    def run(self, argv, **kw):
        if "--raw=/readyz" in argv:
            self.readyz += 1
            return FakeRunner().on(lambda a: True, returncode=0 if self.ready else 1).run(argv, **kw)
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


REFUSED = ('error: error when retrieving current configuration of: ... from server for: "STDIN": Get '
           '"https://127.0.0.1:6443/api/v1/namespaces/x": dial tcp 127.0.0.1:6443: connect: connection refused')


def test_a_refused_connection_to_this_api_server_waits_for_readyz_then_runs_again(tmp_path, monkeypatch):
    """Seen in the guest: the API server restarted (a post-start hook timed out) and refused
    connections, then missed handshakes, for about 70 s; kubectl runs again once /readyz answers."""
    k, runner = _kube(tmp_path, monkeypatch, [(1, REFUSED), (0, "")])
    assert k.kubectl("apply", "-f", "-").ok
    assert len(runner.calls) == 2 and runner.readyz == 1


def test_a_refusal_printed_by_a_workload_is_not_the_api_server(tmp_path, monkeypatch):
    k, runner = _kube(tmp_path, monkeypatch, [(1, "dial tcp 10.96.0.10:80: connect: connection refused")])
    assert not k.kubectl("exec", "p", "--", "curl", check=False).ok
    assert len(runner.calls) == 1 and runner.readyz == 0


def test_an_api_server_that_does_not_come_back_fails_with_what_was_awaited(tmp_path, monkeypatch):
    monkeypatch.setattr(kube, "API_BACK_TIMEOUT", 0)
    k, runner = _kube(tmp_path, monkeypatch, [(1, HANDSHAKE)], ready=False)
    with pytest.raises(waits.WaitTimeout, match="API server 127.0.0.1:6443 to answer /readyz"):
        k.kubectl("get", "pods")


def test_a_long_wait_backs_off_only_on_a_slow_engine(monkeypatch):
    """Polls on the host keep their interval; on a slow engine (the guest) the pause grows, capped."""
    from harness import waits
    from harness.waits import Wait, slower
    clock = {"t": 0.0}
    pauses = []
    monkeypatch.setattr(waits.time, "monotonic", lambda: clock["t"])

    def sleep(s):
        pauses.append(round(s, 3))
        clock["t"] += s
    monkeypatch.setattr(waits.time, "sleep", sleep)
    seen = iter(range(100))
    Wait("eight polls", timeout=1000, interval=0.5).until(lambda: next(seen), lambda n: n == 8)
    assert pauses == [0.5] * 8
    pauses.clear()
    seen = iter(range(100))
    with slower(3):
        Wait("eight polls", timeout=1000, interval=0.5).until(lambda: next(seen), lambda n: n == 8)
    assert pauses[:3] == [0.5, 0.75, 1.125] and max(pauses) == 3.0 and pauses[-1] == 3.0


# ---- client writes while the API server is busy ------------------------------------------------
ETCD_TIMEOUT = ('{"kind":"Status","message":"Service \\"s00003\\" is invalid: spec.clusterIPs: Invalid value: '
                '[\\"\\"]: failed to allocate IP: etcdserver: request timed out","reason":"Invalid","code":422}')


def _api_error(status, body=""):
    from kubernetes.client.exceptions import ApiException
    return ApiException(status=status, reason="test", body=body)


class _Calls:
    """A client call that raises the given errors in turn, then answers "ok"."""
    def __init__(self, *errors):
        self.errors, self.count = list(errors), 0

    def __call__(self):
        self.count += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_a_write_the_storage_did_not_confirm_is_tried_again(monkeypatch):
    monkeypatch.setattr(waits.time, "sleep", lambda s: None)
    call = _Calls(_api_error(422, ETCD_TIMEOUT), _api_error(503), _api_error(429))
    assert kube.api_write(call, "creating Service s00003") == "ok"
    assert call.count == 4


@pytest.mark.parametrize("verb,status", [("create", 409), ("delete", 404)])
def test_a_retry_that_finds_the_earlier_attempt_done_is_done(monkeypatch, verb, status):
    monkeypatch.setattr(waits.time, "sleep", lambda s: None)
    call = _Calls(_api_error(504), _api_error(status))
    assert kube.api_write(call, "a write", verb) is None
    assert call.count == 2


@pytest.mark.parametrize("status,body", [(409, ""), (404, ""), (422, '{"message":"spec.ports: Required value"}'),
                                         (403, "forbidden")])
def test_an_answer_that_is_not_busy_is_raised_at_once(monkeypatch, status, body):
    from kubernetes.client.exceptions import ApiException
    monkeypatch.setattr(waits.time, "sleep", lambda s: None)
    call = _Calls(_api_error(status, body))
    with pytest.raises(ApiException):
        kube.api_write(call, "a write")
    assert call.count == 1


def test_a_server_busy_past_the_timeout_fails_with_what_it_last_said(monkeypatch):
    clock = iter(range(0, 10_000, 7))
    monkeypatch.setattr(waits.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(waits.time, "sleep", lambda s: None)
    call = _Calls(*[_api_error(422, ETCD_TIMEOUT)] * 1000)
    with pytest.raises(waits.WaitTimeout, match="take creating Service s00003.*etcdserver: request timed out"):
        kube.api_write(call, "creating Service s00003", timeout=60)
    assert 1 < call.count < 20


def test_a_write_to_an_api_server_that_refuses_or_resets_is_tried_again(monkeypatch):
    import urllib3
    monkeypatch.setattr(waits.time, "sleep", lambda s: None)
    refused = urllib3.exceptions.MaxRetryError(None, "/api/v1/namespaces/bench/services/s00003",
                                               reason=ConnectionRefusedError(111, "Connection refused"))
    reset = urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset by peer"))
    call = _Calls(refused, reset, _api_error(404))
    assert kube.api_write(call, "deleting Service s00003", "delete") is None  # the reset one went through
    assert call.count == 3


def test_a_write_waits_for_a_restarted_api_server_to_be_ready_before_it_tries_again(monkeypatch):
    """Seen in the guest at ~2500 Services: the API server was gone for two minutes, then answered
    403 while its RBAC was not loaded; `back` (Kube.wait_api_ready) holds the retry until /readyz."""
    import urllib3
    monkeypatch.setattr(waits.time, "sleep", lambda s: None)
    order = []
    gone = urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset by peer"))
    call = _Calls(gone)
    traced = lambda: order.append("write") or call()  # noqa: E731
    assert kube.api_write(traced, "creating Service s02425", back=lambda: order.append("readyz")) == "ok"
    assert order == ["write", "readyz", "write"]


KUBECTL_ETCD_TIMEOUT = 'Error from server (InternalError): error when creating "STDIN": etcdserver: request timed out'


def test_an_idempotent_write_etcd_could_not_store_runs_again(tmp_path, monkeypatch):
    """Seen in the guest while host suites ran beside it: a write met etcd starved of CPU."""
    k, runner = _kube(tmp_path, monkeypatch, [(1, KUBECTL_ETCD_TIMEOUT), (1, KUBECTL_ETCD_TIMEOUT), (0, "")])
    k.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
    assert len(runner.calls) == 3


def test_a_write_that_may_not_be_repeated_is_not_run_again(tmp_path, monkeypatch):
    k, runner = _kube(tmp_path, monkeypatch, [(1, KUBECTL_ETCD_TIMEOUT), (0, "")])
    with pytest.raises(CommandError, match="etcdserver: request timed out"):
        k.patch("configmap", "c", "ns", [{"op": "add", "path": "/x/-", "value": 1}], type_="json")
    assert len(runner.calls) == 1


def test_storage_that_stays_slow_fails_with_what_was_awaited(tmp_path, monkeypatch):
    monkeypatch.setattr(kube, "API_WRITE_TIMEOUT", 0)
    k, runner = _kube(tmp_path, monkeypatch, [(1, KUBECTL_ETCD_TIMEOUT)])
    with pytest.raises(waits.WaitTimeout, match="the API server to store `kubectl apply`"):
        k.create_namespace("x")
    assert len(runner.calls) == 1
