"""Build step: compile the C engine with the Makefile, so pip and make agree."""
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithMake(build_py):
    def run(self):
        subprocess.run(["make", "lib"], check=True)
        super().run()


setup(cmdclass={"build_py": BuildWithMake})
