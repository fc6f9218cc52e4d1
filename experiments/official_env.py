"""Puts the official MSINN code and CompressAI on `sys.path` of a machine with torch but no
network, from what `experiments/prepare_official.sh` carried in `.official/`.

`install_official_deps` builds the CompressAI 1.2.6 sdist into a folder with the carried
build tools (pip, no index, no build isolation), falling back to its Python code with
stand-ins for the two C++ extensions if the build fails; `import_compressai` imports it
from there, stubbing third-party packages it imports for features the benchmark never
uses; `load_official` imports the official `models/msinn.py` and `train.py`. Used by
`experiments/bench_official.py`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import types
import zipfile

# Third-party packages that `import compressai` (1.2.6) imports for features this benchmark never
# calls (point-cloud layers and datasets, dataset downloads, transform registries, progress
# bars); of scipy it uses only `norm.ppf`.
STUBBABLE = ("einops", "pandas", "requests", "scipy", "torchvision", "torch_geometric", "tqdm")

# A module standing in for a C++ extension of compressai that did not build.
NO_EXTENSION = '''"""Stand-in written by bench_official.py: this C++ extension did not build."""


def _fail(*args, **kwargs):
  raise RuntimeError(f"{__name__}: compressai's C++ extensions did not build")


class _Unavailable:
  """A coder class (GaussianConditional builds one at init): any method call fails."""

  def __init__(self, *args, **kwargs):
    pass

  def __getattr__(self, name):
    return _fail


def __getattr__(name):
  if name.startswith("__"):
    raise AttributeError(name)
  return _Unavailable if name[0].isupper() else _fail
'''


# ---------------------------------------------------------------- installing .official/'s packages


def install_official_deps(official: pathlib.Path, site: pathlib.Path) -> dict:
  """Installs CompressAI (built from the carried sdist) and pytorch_msssim into `site`.

  Offline: `pip install --no-index --no-deps --no-build-isolation`, with the carried pybind11
  and wheel on PYTHONPATH for the build. A completed install in `site` is reused.

  Args:
    official: the folder `prepare_official.sh` filled; its `dist/` holds the distributions.
    site: target folder (created), to be put first on `sys.path`.

  Returns:
    How CompressAI got installed: `method`, `seconds`, and `error` if the build failed.
  """
  marker = site / "bench_official_install.json"
  if marker.exists():
    return {**json.loads(marker.read_text()), "reused": str(site)}
  dist = official / "dist"
  sdist, msssim = _one(dist, "compressai-*.tar.gz"), _one(dist, "pytorch_msssim-*.whl")
  tools = [_one(dist, "pybind11-*.whl"), _one(dist, "wheel-*.whl")]
  site.mkdir(parents=True, exist_ok=True)
  pip = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-cache-dir",
         "--disable-pip-version-check", "--quiet"]
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as build_tools:
    steps = [(pip + ["--target", build_tools, *map(str, tools)], None),
             (pip + ["--no-build-isolation", "--target", str(site), str(sdist), str(msssim)],
              os.pathsep.join(filter(None, [build_tools, os.environ.get("PYTHONPATH")])))]
    for cmd, pythonpath in steps:
      env = dict(os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {}))
      proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
      if proc.returncode:
        break
  info = {"method": f"pip build of {sdist.name}", "seconds": time.perf_counter() - start}
  if proc.returncode:
    info = {"method": f"{sdist.name} without its C++ extensions (build failed)",
            "error": (proc.stdout + proc.stderr)[-3000:]}
    _install_without_extensions(sdist, msssim, site)
  marker.write_text(json.dumps(info))
  return info


def _one(folder: pathlib.Path, pattern: str) -> pathlib.Path:
  found = sorted(folder.glob(pattern))
  if len(found) != 1:
    raise FileNotFoundError(f"need one {pattern} in {folder} (run experiments/prepare_official.sh)")
  return found[0]


def _install_without_extensions(sdist: pathlib.Path, msssim: pathlib.Path,
                                site: pathlib.Path) -> None:
  """Fallback: the sdist's Python package as is, stand-ins for `ans` and `_CXX`."""
  with tarfile.open(sdist) as tar:
    top = tar.getnames()[0].split("/")[0]
    members = [m for m in tar.getmembers() if m.name.startswith(f"{top}/compressai/")]
    for m in members:
      m.name = m.name[len(top) + 1:]
    tar.extractall(site, members=members, filter="data")
  with zipfile.ZipFile(msssim) as whl:
    whl.extractall(site)
  for name in ("ans", "_CXX"):
    (site / "compressai" / f"{name}.py").write_text(NO_EXTENSION)


class _Stub:
  """Any class, decorator or function of a stubbed package: does nothing."""

  def __init__(self, *args, **kwargs):
    del kwargs
    self.args = args

  def __call__(self, *args, **kwargs):
    del kwargs
    return args[0] if args else self


def _stub_attribute(name: str):
  if name.startswith("__"):
    raise AttributeError(name)
  return _Stub


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Serves stub modules for missing packages; consulted last, so real packages win."""

  def __init__(self):
    self.roots: set[str] = set()

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    if fullname.split(".")[0] not in self.roots:
      return None
    return importlib.util.spec_from_loader(fullname, self, is_package=True)

  def create_module(self, spec):
    return None

  def exec_module(self, module):
    module.__getattr__ = _stub_attribute
    if module.__name__ == "scipy.stats":
      # compressai's GaussianConditional sizes its CDF tables with norm.ppf(tail_mass / 2).
      module.norm = types.SimpleNamespace(ppf=lambda q: statistics.NormalDist().inv_cdf(float(q)))


def import_compressai(site: pathlib.Path) -> tuple[types.ModuleType, list[str]]:
  """Imports compressai from `site`, stubbing missing packages of `STUBBABLE`.

  Returns:
    The `compressai` module and the names of the packages that were stubbed.
  """
  sys.path.insert(0, str(site))
  finder, stubbed = _StubFinder(), []
  while True:
    try:
      import compressai
      break
    except ModuleNotFoundError as e:
      root = (e.name or "").split(".")[0]
      if root not in STUBBABLE or root in stubbed:
        raise
      if not stubbed:
        sys.meta_path.append(finder)
      stubbed.append(root)
      finder.roots.add(root)
      for name in [n for n in sys.modules if n.split(".")[0] in ("compressai", root)]:
        del sys.modules[name]
  if not pathlib.Path(compressai.__file__).resolve().is_relative_to(site.resolve()):
    raise ImportError(f"compressai came from {compressai.__file__}, not from {site}")
  return compressai, stubbed


def load_official(official: pathlib.Path) -> tuple[types.ModuleType, types.ModuleType]:
  """Imports the official `models/msinn.py` and `train.py` from `official`.

  `models` is registered as a package rooted at `official/models` (it has no `__init__.py`, and
  another `models` on sys.path must not win); train.py's own `sys.path.insert(0, '.')` is undone.

  Returns:
    The modules `models.msinn` and train.py.
  """
  package = types.ModuleType("models")
  package.__path__ = [str(official / "models")]
  sys.modules["models"] = package
  msinn = importlib.import_module("models.msinn")
  spec = importlib.util.spec_from_file_location("official_train", official / "train.py")
  train = importlib.util.module_from_spec(spec)
  saved_path = list(sys.path)
  spec.loader.exec_module(train)
  sys.path[:] = saved_path
  return msinn, train
