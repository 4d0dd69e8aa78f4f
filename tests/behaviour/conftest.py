# Fixtures for behaviour tests; the machinery lives in support.py.
import pytest

from support import LocalDeploy, Receiver


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def local_deploy(tmp_path, receiver):
    d = LocalDeploy(tmp_path / 'site', receiver)
    yield d
    d.stop()


@pytest.fixture(scope='module')
def module_receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope='module')
def module_deploy(tmp_path_factory, module_receiver):
    d = LocalDeploy(tmp_path_factory.mktemp('site'), module_receiver)
    yield d
    d.stop()


@pytest.fixture(scope='session')
def prometheus(tmp_path_factory):
    """One real Prometheus server for the test session (its own port, config and data dir); tests set its
    targets with ``set_targets``."""
    from prometheus_server import Prometheus, ensure_prometheus
    from tests.requires import require
    require(ensure_prometheus(), 'prometheus is missing (Debian package prometheus; scripts/prometheus-prereqs.sh '
            'as root)')
    server = Prometheus(str(tmp_path_factory.mktemp('prometheus'))).start()
    yield server
    server.stop()
