import pytest


def pytest_collection_modifyitems(config, items):
    try:
        from hefl.gpu import available
        gpu = available()
    except Exception:  # noqa: BLE001 - any failure means no usable GPU
        gpu = False
    if gpu:
        return
    skip = pytest.mark.skip(reason="no CUDA device / CuPy visible")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the marker, not the folder name
            item.add_marker(skip)
