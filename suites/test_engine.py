"""The harness itself: the engine that runs a cluster's nodes answers the harness only.

Not a claim of the article, but what makes running its experiments safe: the
Docker engine behind a kind cluster runs the nodes as root, so anything that
reaches its API can start a privileged container on that engine's machine.
"""
import pytest


@pytest.mark.experiment("E18", "The engine running the nodes answers the harness only")
@pytest.mark.kind_only
def test_engine_api_answers_only_the_harness(lab):
    """Neither a pod nor a node's own network namespace (what every hostNetwork pod shares) gets an
    answer from the Docker engine's API, tried at every address where the nodes see the engine's
    machine, on Docker's API ports, plain and TLS. Where the engine has a TCP API (the UML guest),
    this machine gets no answer without the harness's client certificate, and one with it.
    """
    worker = lab.cluster.workers[0]
    urls = lab.engine_api_urls()
    for peer in (lab.client(worker), lab.node(worker)):
        answered = {url: code for url in urls if (code := lab.http_code(peer, url)) != "000"}
        lab.note(f"from {peer.describe()}: {len(urls) - len(answered)} of {len(urls)} engine API addresses "
                 f"gave no answer" + (f"; answered: {answered}" if answered else ""))
        assert not answered, f"the engine's API answered {peer.describe()}: {answered}"

    eng = lab.cluster.kind.engine
    if eng.api_url():
        without = lab.http_code(None, eng.api_url())
        with_ours = lab.http_code(None, eng.api_url(), eng.api_credentials())
        lab.note(f"from this host: {eng.api_url()} without the client certificate -> {without}, "
                 f"with the harness's -> {with_ours}")
        assert with_ours == "200", f"the harness's own credentials got {with_ours} from {eng.api_url()}"
        assert without == "000", f"{eng.api_url()} answered {without} without a client certificate"
    else:
        lab.note(f"{eng.describe()}: its API is a local unix socket only; no TCP API to try from this host")
