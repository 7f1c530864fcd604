"""The NumPy core is pure: model/ imports nothing from pipeline/, Optuna, MLflow, Typer or rich, and never prints."""

import ast
from pathlib import Path


def test_model_package_is_pure():
    """model/ imports no tracking, CLI or terminal library and never prints."""
    banned = {"optuna", "mlflow", "typer", "rich", "pipeline", "matplotlib", "pandas"}
    for path in Path(__file__).parents[1].joinpath("model").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                names = []
            assert not {n.split(".")[0] for n in names} & banned, (path.name, names)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                raise AssertionError(f"{path.name} prints")
