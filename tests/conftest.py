"""Test-suite configuration shared by tests/ and notebooks/."""

import pytest

#: notebooks that rerun an experiment for a minute or more on 2 cores: executed by
#: ``pytest -m slow`` (see the README), left out of the default suite; their pages in the docs
#: show the outputs stored in the repository
SLOW_NOTEBOOKS = {
    "05_lambda_path_vs_theory.ipynb",
    "07_anti_distillation.ipynb",
    "08_optimal_self_distillation.ipynb",
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_NOTEBOOKS:
            item.add_marker(pytest.mark.slow)
