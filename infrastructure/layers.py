"""Lambda layers: the archive's core package and its third-party dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infrastructure.settings import ASSET_EXCLUDES

_PIP_PLATFORMS = {
    lambda_.Architecture.ARM_64.name: "manylinux2014_aarch64",
    lambda_.Architecture.X86_64.name: "manylinux2014_x86_64",
}


def pip_install_args(
    *, runtime: lambda_.Runtime, architecture: lambda_.Architecture, target: str
) -> list[str]:
    """pip arguments that fetch wheels for the Lambda's Python and CPU, whatever machine runs them."""
    return [
        "install",
        "--requirement",
        "requirements.txt",
        "--target",
        target,
        "--platform",
        _PIP_PLATFORMS[architecture.name],
        "--implementation",
        "cp",
        "--python-version",
        runtime.name.removeprefix("python"),
        "--only-binary=:all:",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--quiet",
    ]


@jsii.implements(ILocalBundling)
class PipLocalBundling:
    """Bundle with the pip of the Python that runs CDK; Docker is the fallback when that fails.

    ``--platform``/``--only-binary`` make pip fetch the Lambda's wheels on any OS and CPU, so no
    Docker engine is needed on the deploying machine.
    """

    def __init__(
        self, *, source_dir: Path, runtime: lambda_.Runtime, architecture: lambda_.Architecture
    ) -> None:
        self._source_dir = source_dir
        self._runtime = runtime
        self._architecture = architecture

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_options: object) -> bool:
        args = pip_install_args(
            runtime=self._runtime, architecture=self._architecture, target=str(Path(output_dir) / "python")
        )
        try:
            subprocess.run(
                [sys.executable, "-m", "pip", *args],
                cwd=self._source_dir,
                check=True,
                timeout=600,
            )
        except (OSError, subprocess.SubprocessError) as error:
            print(f"local bundling failed ({error}); falling back to {image.image}", file=sys.stderr)
            return False
        return True


class ArchiveLayers(Construct):
    """``core``: the archive package from ``layers/core`` as is (it already has ``python/``).
    ``deps``: ``layers/deps/requirements.txt`` installed into ``python/`` at synth time."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        core_dir: Path,
        deps_dir: Path,
        runtime: lambda_.Runtime,
        architecture: lambda_.Architecture,
    ) -> None:
        super().__init__(scope, construct_id)
        self.core = lambda_.LayerVersion(
            self,
            "Core",
            description="The imaging archive's core package (archive.*)",
            code=lambda_.Code.from_asset(str(core_dir), exclude=list(ASSET_EXCLUDES)),
            compatible_runtimes=[runtime],
            compatible_architectures=[architecture],
        )
        docker_args = pip_install_args(
            runtime=runtime, architecture=architecture, target="/asset-output/python"
        )
        self.deps = lambda_.LayerVersion(
            self,
            "Deps",
            description="Third-party packages of the imaging archive (layers/deps/requirements.txt)",
            code=lambda_.Code.from_asset(
                str(deps_dir),
                exclude=["python", *ASSET_EXCLUDES],
                # Hash the requirements, not pip's output: the layer only changes when they do, and
                # a synth that finds the bundle in cdk.out reuses it (no pip, works offline).
                asset_hash_type=AssetHashType.SOURCE,
                bundling=BundlingOptions(
                    # The Lambda build image for the same Python; pip still picks wheels by
                    # --platform, so an x86 Docker host builds ARM layers without emulation.
                    image=runtime.bundling_image,
                    command=["bash", "-c", " ".join(["pip", *docker_args])],
                    local=PipLocalBundling(source_dir=deps_dir, runtime=runtime, architecture=architecture),
                ),
            ),
            compatible_runtimes=[runtime],
            compatible_architectures=[architecture],
        )
