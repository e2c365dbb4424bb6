"""Packaging: the folders of the design card are the subpackages of the one installed name, ``srdeploy``, found
by setuptools' package discovery (every folder with an ``__init__.py`` under them goes into the wheel; none is
listed by hand). Everything else is in pyproject.toml."""
from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

LAYERS = ("runtime", "models", "calib", "export", "benchmarks")  # api.py and cli.py sit in the root, srdeploy itself


class WithoutThisFile(build_py):
    """The root's modules are srdeploy's (api, cli); this file is not one of them."""

    def find_package_modules(self, package, package_dir):
        return [m for m in super().find_package_modules(package, package_dir) if (m[0], m[1]) != ("srdeploy", "setup")]


if __name__ == "__main__":
    setup(package_dir={"srdeploy": "."}, cmdclass={"build_py": WithoutThisFile},
          packages=["srdeploy", *(f"srdeploy.{name}" for name in find_packages(include=[p for layer in LAYERS
                                                                                          for p in (layer, f"{layer}.*")]))])
