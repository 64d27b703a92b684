import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run slow, opt-in tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: opt in with --runslow (make test-all)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
