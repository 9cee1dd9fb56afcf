"""The simulated CI fleet, as data: what "Docker Hub" holds, which Dockerfiles the teams build, when
builds start and when upstream tags move. Pure and seeded: the same seed gives the same day.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field

from ecr_mirror_cdk.reference import parse
from tests.simulate.dockerfile import find_images, parse_dockerfile

DAY = 24 * 3600.0
OFFICIAL_PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/ppc64le")
MIRRORED_PLATFORMS = ("linux/amd64", "linux/arm64")  # what mirror.yaml selects; CodeBuild x86 and ARM
# Share of builds per hour of the (UTC) day: quiet nights, a working-day peak, nightly jobs at 02:00.
HOURLY_WEIGHTS = (2, 1, 4, 1, 1, 1, 2, 4, 8, 10, 10, 9, 7, 9, 10, 10, 9, 7, 5, 3, 2, 2, 2, 2)


@dataclass(frozen=True)
class Image:
    """One tag on "Docker Hub" (repository as the registry API names it: library/python)."""

    repository: str
    tag: str
    kind: str = "oci-index"  # "oci-index" (multi-platform) or "docker-v2" (one platform)
    platforms: tuple[str, ...] = OFFICIAL_PLATFORMS
    layer_size: int = 4096
    attestations: bool = False  # buildx SBOM/provenance manifests in the index, as official images have
    real_mb: float = 50.0  # compressed size of one platform's image on Docker Hub, for the cost table only

    @property
    def name(self) -> str:
        short = self.repository.removeprefix("library/")
        return f"{short}:{self.tag}"

    @property
    def multi_platform(self) -> bool:
        return self.kind == "oci-index"

    @property
    def seed(self) -> int:
        """Content seed of the image as the day starts; distinct per image, stable across runs."""
        return zlib.crc32(self.name.encode())


# `real_mb`: the real image's compressed size per platform, approximate (the cost table's storage
# and transfer figures scale by it; the simulated images are a few kB so the day runs in seconds).
CATALOG: tuple[Image, ...] = (
    Image("library/python", "3.13-slim", layer_size=6000, attestations=True, real_mb=45),
    Image("library/python", "3.12-slim", layer_size=6000, attestations=True, real_mb=45),
    Image("library/node", "22-bookworm-slim", layer_size=5000, attestations=True, real_mb=75),
    Image("library/node", "20-alpine", layer_size=3000, attestations=True, real_mb=45),
    Image("library/golang", "1.23-alpine", layer_size=8000, attestations=True, real_mb=85),
    Image("library/alpine", "3.20", layer_size=1500, attestations=True, real_mb=4),
    Image("library/nginx", "1.27-alpine", layer_size=2500, attestations=True, real_mb=20),
    Image("library/debian", "bookworm-slim", layer_size=3500, attestations=True, real_mb=30),
    Image("library/eclipse-temurin", "21-jre", layer_size=7000, attestations=True, real_mb=95),
    Image("library/maven", "3.9-eclipse-temurin-21", layer_size=9000, attestations=True, real_mb=200),
    Image("library/postgres", "16-alpine", layer_size=7000, attestations=True, real_mb=100),
    Image("library/redis", "7.4-alpine", layer_size=3000, attestations=True, real_mb=17),
    Image("bitnami/kubectl", "1.31", platforms=MIRRORED_PLATFORMS, layer_size=4000, real_mb=90),
    Image("bitnami/node", "22", platforms=MIRRORED_PLATFORMS, layer_size=5000, real_mb=250),
    Image("hashicorp/terraform", "1.9", platforms=MIRRORED_PLATFORMS, layer_size=6000, real_mb=30),
    Image("acme/build-tools", "2024.11", kind="docker-v2", platforms=("linux/amd64",), layer_size=3000, real_mb=60),
)

# The teams' Dockerfiles: ARG-built tags, multi-stage, --platform, scratch, COPY --from=image.
DOCKERFILES: dict[str, str] = {
    "orders-api": "ARG PYTHON_VERSION=3.12\nFROM python:${PYTHON_VERSION}-slim\nCOPY . /app\n",
    "billing-worker": (
        "FROM python:3.13-slim AS build\nRUN pip wheel -w /wheels .\n"
        "FROM python:3.13-slim\nCOPY --from=build /wheels /wheels\n"),
    "storefront": (
        "FROM node:22-bookworm-slim AS build\nRUN npm ci && npm run build\n"
        "FROM nginx:1.27-alpine\nCOPY --from=build /app/dist /usr/share/nginx/html\n"),
    "search-svc": (
        "FROM --platform=$BUILDPLATFORM golang:1.23-alpine AS build\nRUN go build -o /svc .\n"
        "FROM alpine:3.20\nCOPY --from=build /svc /svc\n"),
    "edge-proxy": (
        "FROM golang:1.23-alpine AS build\nRUN CGO_ENABLED=0 go build -o /proxy .\n"
        "FROM scratch\nCOPY --from=alpine:3.20 /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/\n"
        "COPY --from=build /proxy /proxy\n"),
    "ledger": (
        "FROM maven:3.9-eclipse-temurin-21 AS build\nRUN mvn -q package\n"
        "FROM eclipse-temurin:21-jre\nCOPY --from=build /app/target/app.jar /app.jar\n"),
    "notifier": "FROM node:20-alpine\nCOPY . /app\n",
    "deploy-tools": (
        "FROM bitnami/kubectl:1.31 AS kubectl\n"
        "FROM hashicorp/terraform:1.9\nCOPY --from=kubectl /opt/bitnami/kubectl/bin/kubectl /usr/local/bin/\n"),
    "ssr-web": "FROM bitnami/node:22\nCOPY . /app\n",
    "base-runtime": "FROM debian:bookworm-slim\nRUN apt-get update\n",
    "reports": (
        "FROM acme/build-tools:2024.11 AS tools\n"
        "FROM python:3.12-slim\nCOPY --from=tools /usr/local/bin/render /usr/local/bin/\n"),
    "docs-site": (
        "ARG PYTHON_VERSION=3.12\nFROM python:${PYTHON_VERSION}-slim AS build\nRUN mkdocs build\n"
        "FROM nginx:1.27-alpine\nCOPY --from=build /site /usr/share/nginx/html\n"),
    "cli": "FROM golang:1.23-alpine\nRUN go build ./...\n",
    "etl": "FROM python:3.13-slim\nCOPY . /etl\n",
    "admin-ui": (
        "FROM node:22-bookworm-slim AS build\nRUN npm ci\n"
        "FROM nginx:1.27-alpine\nCOPY --from=build /app/dist /usr/share/nginx/html\n"),
    "infra": "FROM hashicorp/terraform:1.9\nCOPY . /infra\n",
}

# Images the builds' test commands `docker run` (integration tests against a database), as
# `docker run postgres:16-alpine` names them: with the mirror, the daemon's registry mirror serves them.
TEST_RUNS: dict[str, tuple[str, ...]] = {
    "orders-api": ("postgres:16-alpine",),
    "billing-worker": ("redis:7.4-alpine",),
    "ledger": ("postgres:16-alpine",),
    "etl": ("postgres:16-alpine", "redis:7.4-alpine"),
    "search-svc": ("redis:7.4-alpine",),
}

# What the teams pull that the simulated mirror.yaml does not list (a team's own tool image nobody added):
# the build host's endpoint serves it from the Docker Hub cache rule, with ECR's tag semantics.
UNLISTED: tuple[str, ...] = ("acme/build-tools:2024.11",)

# Upstream rebuilds during the day: (hours after midnight, image name). Same tag, new content.
BUMPS: tuple[tuple[float, str], ...] = (
    (7.7, "python:3.12-slim"),
    (10.25, "node:22-bookworm-slim"),
    (11.6, "postgres:16-alpine"),  # pulled by test commands (`docker run`), not by a FROM
    (13.1, "nginx:1.27-alpine"),
    (16.5, "alpine:3.20"),
    (20.8, "golang:1.23-alpine"),
)


@dataclass(frozen=True)
class Build:
    number: int
    time: float  # seconds after midnight
    service: str
    platform: str

    @property
    def dockerfile(self) -> str:
        return DOCKERFILES[self.service]

    @property
    def test_runs(self) -> tuple[str, ...]:
        return TEST_RUNS.get(self.service, ())


@dataclass(frozen=True)
class Bump:
    time: float
    image: Image
    seed: int  # content seed of the new push


@dataclass(frozen=True)
class Day:
    builds: tuple[Build, ...]
    bumps: tuple[Bump, ...]
    images: tuple[Image, ...] = field(default=CATALOG)
    length: float = DAY


def plan_day(builds: int = 500, *, seed: int = 7, arm_share: float = 0.15, bumps: int | None = None,
             services: tuple[str, ...] | None = None, length: float = DAY) -> Day:
    """`builds` build start times over `length` seconds, weighted by hour; services by Zipf popularity.

    `services` limits the fleet to some Dockerfiles (and "Docker Hub" to the images they use);
    a shorter `length` squeezes the same shape (and the bump times) into less simulated time.
    """
    rng = random.Random(seed)
    services = list(services or DOCKERFILES)
    popularity = [1 / (rank + 1) ** 0.8 for rank in range(len(services))]
    hours = rng.choices(range(24), weights=HOURLY_WEIGHTS, k=builds)
    times = sorted((hour + rng.random()) * length / 24 for hour in hours)
    fleet = tuple(
        Build(n + 1, t, rng.choices(services, weights=popularity)[0],
              "linux/arm64" if rng.random() < arm_share else "linux/amd64")
        for n, t in enumerate(times)
    )
    used = {name for service in services for name in (*uses(DOCKERFILES[service]), *TEST_RUNS.get(service, ()))}
    images = tuple(image for image in CATALOG if image.name in used)
    by_name = {image.name: image for image in images}
    chosen = [(hours, name) for hours, name in BUMPS if name in by_name][:bumps]
    moved = tuple(Bump(hours * length / 24, by_name[name], seed=1000 + i) for i, (hours, name) in enumerate(chosen))
    return Day(fleet, moved, images, length)


def uses(dockerfile: str) -> list[str]:
    """Catalog names (`python:3.12-slim`, `bitnami/kubectl:1.31`) of the images a Dockerfile pulls."""
    images, _ = find_images(parse_dockerfile(dockerfile), {})
    out = []
    for use in images:
        ref = parse(use.written)
        out.append(f"{ref.repository.removeprefix('library/')}:{ref.tag or 'latest'}")
    return list(dict.fromkeys(out))
