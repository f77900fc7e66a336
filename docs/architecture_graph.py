"""The package-level import graph of irevla, as a Mermaid flowchart for docs/architecture.md.

    python docs/architecture_graph.py            # print the block
    python docs/architecture_graph.py --write    # replace the block in docs/architecture.md
    python docs/architecture_graph.py --check    # exit 1 if docs/architecture.md's block is stale

grimp reads every import statement of the package, the lazy ones inside functions included (the same graph
import-linter checks the layer rules on), so the picture is the code's, not anyone's memory of it.
tests/test_architecture_doc.py fails when the embedded block differs from what this prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"
BEGIN = "<!-- import-graph:begin (generated: python docs/architecture_graph.py --write; do not edit) -->"
END = "<!-- import-graph:end -->"

# Third-party frameworks whose boundaries the layer rules are about, drawn as their own nodes. Each maps the
# top-level import names that count as that framework.
FRAMEWORKS = {
    "torch": ("torch", "transformers", "peft", "accelerate"),
    "JAX": ("jax", "flax", "optax"),
    "ROS 2": ("rclpy",),
    "MuJoCo": ("mujoco", "metaworld", "gymnasium_robotics"),
    "ZeroMQ": ("zmq",),
    "TensorBoard / wandb": ("tensorboard", "wandb"),  # the metrics (irevla/metrics_log.py)
}


def _node_id(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")


def _label(graph, module: str) -> str:
    short = module.split(".", 1)[1]
    return f"{short}/" if graph.find_children(module) else f"{short}.py"


def build_edges(package: str = "irevla") -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """(the package's subpackages and top-level modules, edges between them, edges to FRAMEWORKS), sorted."""
    import grimp

    sys.path.insert(0, str(REPO))  # this checkout's package, whatever is installed
    try:
        graph = grimp.build_graph(package, include_external_packages=True, cache_dir=None)
    finally:
        sys.path.remove(str(REPO))
    parts = sorted(graph.find_children(package))
    internal = [(a, b) for a in parts for b in parts
                if a != b and graph.direct_import_exists(importer=a, imported=b, as_packages=True)]
    external = [(a, framework) for a in parts for framework, names in FRAMEWORKS.items()
                if any(name in graph.modules and graph.direct_import_exists(importer=a, imported=name,
                                                                            as_packages=True) for name in names)]
    labels = {part: _label(graph, part) for part in parts}
    return [labels[p] for p in parts], [(labels[a], labels[b]) for a, b in internal], \
        [(labels[a], f) for a, f in external]


def render(package: str = "irevla") -> str:
    """The Mermaid block (with its ``` fence): an arrow A --> B means code in A imports B; dotted arrows go to the
    third-party frameworks."""
    nodes, internal, external = build_edges(package)
    lines = ["```mermaid", "flowchart TD"]
    lines += [f'    {_node_id(n)}["{n}"]' for n in nodes]
    lines += [f'    {_node_id(f)}(["{f}"]):::framework' for f in FRAMEWORKS if any(e[1] == f for e in external)]
    lines += [f"    {_node_id(a)} --> {_node_id(b)}" for a, b in internal]
    lines += [f"    {_node_id(a)} -.-> {_node_id(f)}" for a, f in external]
    lines += ["    classDef framework fill:#eee,stroke:#999,color:#333", "```"]
    return "\n".join(lines) + "\n"


def embedded(text: str) -> str | None:
    """The block between the markers in `text` (None if the markers are missing)."""
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].lstrip("\n")


def replace_block(text: str, block: str) -> str:
    if embedded(text) is None:
        raise SystemExit(f"{DOC}: the markers {BEGIN!r} and {END!r} are missing")
    head, rest = text.split(BEGIN, 1)
    return head + BEGIN + "\n" + block + END + rest.split(END, 1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"replace the block in {DOC.relative_to(REPO)}")
    mode.add_argument("--check", action="store_true", help="exit 1 if the embedded block is stale")
    args = parser.parse_args(argv)
    block = render()
    if args.write:
        DOC.write_text(replace_block(DOC.read_text(), block))
        print(f"wrote the import graph into {DOC.relative_to(REPO)}")
    elif args.check:
        if embedded(DOC.read_text()) != block:
            print(f"{DOC.relative_to(REPO)}: the import graph is stale; run: python docs/architecture_graph.py --write")
            return 1
    else:
        sys.stdout.write(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
