"""setup.py's dependencies: each is imported by the package (or named here with the reason it is
needed without an import), so a dependency nothing uses cannot linger (einops did)."""
import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPORT_NAMES = {"orbax-checkpoint": "orbax", "absl-py": "absl", "tensorflow-cpu": "tensorflow",
                "tensorflow-datasets": "tensorflow_datasets", "scikit-learn": "sklearn", "pillow": "PIL"}
# Needed at run time without an import of ours.
NOT_IMPORTED = {"tensorboard": "clu.metric_writers writes TensorBoard event files through it",
                "google-cloud-storage": "orbax lists a gs:// checkpoint directory's steps through it",
                "gcsfs": "etils.epath's gs:// backend where TF's file system is not used (EPATH_USE_TF=false)"}


def install_requires():
  tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "INSTALL_REQUIRES":
      return [re.split(r"[<>=;\[ ]", ast.literal_eval(e))[0] for e in node.value.elts]
  raise AssertionError("setup.py has no INSTALL_REQUIRES list")


def imported_top_level_modules():
  names = set()
  for folder, _, files in os.walk(os.path.join(ROOT, "autox3d_jax")):
    for f in files:
      if f.endswith(".py"):
        for node in ast.walk(ast.parse(open(os.path.join(folder, f)).read())):
          if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
          elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
  return names


def test_every_dependency_is_used():
  imported = imported_top_level_modules()
  unused = [d for d in install_requires()
            if d not in NOT_IMPORTED and IMPORT_NAMES.get(d, d.replace("-", "_")) not in imported]
  assert not unused, f"setup.py installs {unused} but autox3d_jax imports none of them"
