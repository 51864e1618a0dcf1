"""minissd.viz re-exports every public name of its modules, so chapters import from one place."""
import ast
import importlib
import inspect

import pytest

from minissd import viz

MODULES = ["photos", "cnn", "network", "default_boxes", "matching_and_loss", "training", "detections"]


@pytest.mark.parametrize("name", MODULES)
def test_every_public_name_of_a_module_is_minissd_viz_s_own(name):
    module = importlib.import_module(f"minissd.viz.{name}")
    tree = ast.parse(inspect.getsource(module))               # what the module itself defines
    defined = [node.name if isinstance(node, ast.FunctionDef) else node.targets[0].id
               for node in tree.body if isinstance(node, (ast.FunctionDef, ast.Assign))]
    public = [n for n in defined if not n.startswith("_")]
    assert public, f"minissd.viz.{name} defines nothing public"
    for n in public:
        assert n in viz.__all__ and getattr(viz, n) is getattr(module, n), f"minissd.viz.{n}"


def test_all_names_exist_once():
    assert len(viz.__all__) == len(set(viz.__all__))
    assert all(hasattr(viz, n) for n in viz.__all__)
