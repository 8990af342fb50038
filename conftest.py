"""pytest for the notebooks: the outputs stored in cells marked `# NBVAL_CHECK_OUTPUT` are the cpu profile's.

Under any other profile (t4-sim and l4-sim in `make test`, a GPU profile on a GPU) their sizes, models and counts
differ by design, so every cell still runs and must not fail, but no stored output is compared.
"""
import os

import pytest


def _profile_name() -> str:
    from helpers.profiles import select_profile

    return select_profile().name


def pytest_report_header(config):
    if os.environ.get("COURSE_PROFILE", "cpu") != "cpu":
        return f"COURSE_PROFILE={_profile_name()}: notebooks run in full; stored outputs (cpu profile) not compared"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    cells = [item for item in items if type(item).__name__ == "IPyNbCell"]
    if cells and _profile_name() != "cpu":
        for cell in cells:
            cell.options["check"] = False
