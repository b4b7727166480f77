import pytest

from infra.config_doc import render
from infra.settings import REPO_ROOT

pytestmark = pytest.mark.unit


def test_configuration_doc_lists_every_setting_as_the_code_defines_it():
    doc = (REPO_ROOT / "docs" / "configuration.md").read_text()
    assert render(doc) == doc, "docs/configuration.md is stale: run `voxagent config-doc`"
