"""The checked-in OpenAPI document (docs/api-spec.yaml) is the app's own, never a stale copy."""

from __future__ import annotations

import runpy

from tests.paths import REPO_ROOT

EXPORT = runpy.run_path(str(REPO_ROOT / "scripts" / "export_openapi.py"))  # a document generator, not a module
SPEC_PATH, render = EXPORT["SPEC_PATH"], EXPORT["render"]


def test_checked_in_api_spec_equals_the_apps_openapi_document() -> None:
    """Fails when a route or model changed without `python scripts/export_openapi.py`."""
    assert SPEC_PATH.read_text() == render(), "docs/api-spec.yaml is stale: run python scripts/export_openapi.py"


def test_api_spec_documents_every_contract_endpoint() -> None:
    """The contract's endpoints and answers are all in the document a client generates code from."""
    import yaml

    spec = yaml.safe_load(SPEC_PATH.read_text())
    assert {"/ingest", "/ingest/batch", "/health", "/metrics"} <= set(spec["paths"])
    for path in ("/ingest", "/ingest/batch"):
        answers = set(spec["paths"][path]["post"]["responses"])
        assert {"202", "401", "413", "422", "503"} <= answers
    assert "Reading" in spec["components"]["schemas"]
