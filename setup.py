from pathlib import Path

from setuptools import find_packages, setup


def read_requirements(name):
    lines = Path(__file__).with_name(name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith(("#", "-r"))]


setup(
    name="mg",
    version="0.1.0",
    description="Movie Gen-style video generation (DiT + flow matching + TAE) in MindSpore",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9,<3.12",
    packages=find_packages(include=["mg", "mg.*"]),
    install_requires=read_requirements("requirements.txt"),
    extras_require={"dev": read_requirements("requirements-dev.txt")},
)
