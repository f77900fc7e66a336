"""docs/architecture.md's import graph is the code's: regenerated from the package's imports, it equals the block
embedded in the page."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("architecture_graph", REPO / "docs" / "architecture_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_embedded_import_graph_is_the_codes():
    generator = _generator()
    embedded = generator.embedded((REPO / "docs" / "architecture.md").read_text())
    assert embedded is not None, ("docs/architecture.md lost its import-graph markers; restore them and run "
                                  "`python docs/architecture_graph.py --write`")
    assert embedded == generator.render(), (
        "docs/architecture.md's import graph differs from the code's imports: run "
        "`python docs/architecture_graph.py --write` and commit the result")


def test_the_graph_shows_the_layer_rules_it_documents():
    """The picture draws the boundaries docs/architecture.md describes (a generator bug would hide them)."""
    text = _generator().render()
    assert text.startswith("```mermaid\nflowchart TD\n") and text.endswith("```\n")
    assert "    iterate --> learner\n" in text
    assert "    learner -.-> JAX\n" in text
    assert "learner -.-> torch" not in text and "transport -.-> torch" not in text
