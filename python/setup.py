"""setup.py - bundles the built libkiln.so (and the AOT runtime support kiln_export links
into each library it writes) into the package, so an installed kiln does not depend on
the build tree. Build Kiln first (`make build`); KILN_BUILD_DIR names another build
folder (default: ../build beside this folder). The metadata is in pyproject.toml.
"""
import glob
import os
import shutil

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def _built(build):
    """libkiln.so (the real file behind the symlinks) and lib/kiln/libkiln_aotrt.a of a build."""
    libs = sorted(glob.glob(os.path.join(build, "lib", "libkiln.so*")), key=len)
    aotrt = os.path.join(build, "lib", "kiln", "libkiln_aotrt.a")
    if not libs or not os.path.exists(aotrt):
        raise SystemExit(
            f"kiln: no libkiln.so in {build}/lib (or no lib/kiln/libkiln_aotrt.a): build Kiln first (`make build` "
            "in the checkout), or set KILN_BUILD_DIR to the build folder")
    return os.path.realpath(libs[0]), aotrt


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        build = os.path.abspath(os.environ.get("KILN_BUILD_DIR", os.path.join(HERE, "..", "build")))
        lib, aotrt = _built(build)
        dest = os.path.join(self.build_lib, "kiln", "_lib")
        os.makedirs(os.path.join(dest, "kiln"), exist_ok=True)
        # one plain file: wheels keep no symlinks, and ctypes loads it by path. The AOT
        # runtime goes where an installed Kiln keeps it, kiln/ beside libkiln.so, where
        # libkiln.so looks for it (driver/library.c, find_aotrt).
        shutil.copyfile(lib, os.path.join(dest, "libkiln.so"))
        shutil.copyfile(aotrt, os.path.join(dest, "kiln", "libkiln_aotrt.a"))


class BinaryDistribution(Distribution):
    """The package carries a native library: its wheel is platform-specific."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildPyWithLibrary}, distclass=BinaryDistribution)
