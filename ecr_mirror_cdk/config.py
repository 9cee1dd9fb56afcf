"""The typed model of `mirror.yaml`, shared by the CDK app (at synth) and the planner Lambda (at run time).

Pure Python on purpose: the Lambda runtime has no YAML or pydantic, so the stack stores the
validated config as JSON in SSM and the planner runs it through the same `parse_config`.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .reference import DOCKER_HUB, TAG_RE, Reference, ReferenceError, parse
from .signing_key import KeySource, key_source, load_public_key

DEFAULT_SCHEDULE = "rate(10 minutes)"
DEFAULT_SECRET = "ecr-pullthroughcache/docker-hub"
# Copy the artifacts that refer to each image (signatures, SBOMs, attestations): on unless mirror.yaml says
# `referrers: false`, so a team that verifies signatures keeps them (docs/signatures.md says why and what it costs).
DEFAULT_REFERRERS = True
SECRET_PREFIX = "ecr-pullthroughcache/"


@dataclass(frozen=True)
class Upstream:
    """An upstream registry that ECR pull-through cache supports."""

    url: str  # what AWS::ECR::PullThroughCacheRule calls UpstreamRegistryUrl
    registry: str  # the host image references name
    needs_credentials: bool


UPSTREAMS: dict[str, Upstream] = {
    "docker-hub": Upstream("registry-1.docker.io", DOCKER_HUB, True),
    "ecr-public": Upstream("public.ecr.aws", "public.ecr.aws", False),
    "quay": Upstream("quay.io", "quay.io", False),
    "k8s": Upstream("registry.k8s.io", "registry.k8s.io", False),
    "github-container-registry": Upstream("ghcr.io", "ghcr.io", True),
    "gitlab-container-registry": Upstream("registry.gitlab.com", "registry.gitlab.com", True),
}
DEFAULT_UPSTREAMS = ("docker-hub", "ecr-public", "quay", "k8s")

_ECR_NAME = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")
_PREFIX = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
_CRON = re.compile(r"cron\((\S+ ){5}\S+\)")
_OS = {"linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "aix", "illumos", "plan9"}
_ARCH = {
    "amd64",
    "arm64",
    "arm",
    "386",
    "ppc64le",
    "ppc64",
    "s390x",
    "riscv64",
    "mips64le",
    "mips64",
    "mipsle",
    "mips",
    "loong64",
    "wasm",
}
# Variants as the OCI image index spec and Go's GOAMD64/GOARM/GOARM64 name them: linux/amd64/v2 ... v4
# (x86-64 micro-architecture levels), linux/arm/v5 ... v8, linux/arm64/v8 or v8.N, v9 or v9.N.
_VARIANTS = {
    "amd64": re.compile(r"v[1-4]"),
    "arm": re.compile(r"v[5-8]"),
    "arm64": re.compile(r"v[89](?:\.[0-9])?"),
}
_OTHER_VARIANT = re.compile(r"v[5-9]|v8\.[0-9]")
_SSM_NAME = re.compile(r"/?[a-zA-Z0-9_.\-/]{1,1011}")
_ACCOUNT = re.compile(r"[0-9]{12}")
# AWS Organizations API reference, Organization.Id: "o-" then 10 to 32 lowercase letters or digits.
_ORGANIZATION = re.compile(r"o-[a-z0-9]{10,32}")
# AWS::CloudFormation::StackSet DeploymentTargets.OrganizationalUnitIds: the root id (r-) or OU ids (ou-).
_STACK_SET_TARGET = re.compile(r"ou-[a-z0-9]{4,32}-[a-z0-9]{8,32}|r-[a-z0-9]{4,32}")
# AWS::CloudFormation::StackSet CallAs: SELF in the management account, else a registered delegated administrator.
STACK_SET_CALL_AS = ("DELEGATED_ADMIN", "SELF")
# Region names as AWS writes them: us-east-1, ap-southeast-5, us-gov-west-1, cn-north-1, eusc-de-east-1.
_REGION = re.compile(r"[a-z]{2,4}(?:-(?:gov|iso[a-z]?))?-[a-z]+-[0-9]{1,2}")
# Secrets Manager secret names: 1-512 of letters, digits and /_+=.@-.
_SECRET_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")


# ECR's tag mutability settings that refuse to move a tag (botocore's ECR model, ImageTagMutability).
IMMUTABLE_SETTINGS = ("IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION")


class ConfigError(ValueError):
    """Bad input in the config file; the message names file, entry and field."""


@dataclass(frozen=True)
class CacheRule:
    upstream: str
    prefix: str
    credentials_secret: str | None = None

    @property
    def registry(self) -> str:
        return UPSTREAMS[self.upstream].registry

    @property
    def upstream_url(self) -> str:
        return UPSTREAMS[self.upstream].url


@dataclass(frozen=True)
class Verify:
    """A tag moves only to a digest this key signed (docs/verify-signatures.md)."""

    cosign_public_key: str  # an inline PEM, ssm:<parameter name> or secretsmanager:<secret name>

    @property
    def source(self) -> KeySource:
        return key_source(self.cosign_public_key)


@dataclass(frozen=True)
class Image:
    source: str
    tags: tuple[str, ...] = ()
    tag_regex: str | None = None
    platforms: tuple[str, ...] = ()
    target: str | None = None
    # Filled by parse_config: the repository the image is copied into (`target`, or mirror/<host>/<path>).
    repository: str = ""
    referrers: bool = DEFAULT_REFERRERS  # the image's own `referrers`, else the top-level one
    # Filled by parse_config: the image's own `verify`, else the top-level one; None: tags move unchecked.
    verify: Verify | None = None

    @property
    def ref(self) -> Reference:
        return parse(self.source)


@dataclass(frozen=True)
class Credentials:
    secret_name: str = DEFAULT_SECRET
    existing_secret: bool = False
    ssm_username: str | None = None
    ssm_token: str | None = None


@dataclass(frozen=True)
class Sync:
    quota_reserve: int = 20
    max_concurrency: int = 4
    # None: no reserved concurrency (an account may have only 10 units, and Lambda keeps 100 unreserved).
    planner_reserved_concurrency: int | None = None


@dataclass(frozen=True)
class Repositories:
    prefix: str = "mirror"
    tag_mutability: str = "MUTABLE"
    untagged_expiry_days: int = 7


@dataclass(frozen=True)
class StackSet:
    """Where the organization's StackSet puts the contract: the root id (every account) or OU ids."""

    targets: tuple[str, ...]
    call_as: str = STACK_SET_CALL_AS[0]


@dataclass(frozen=True)
class Sharing:
    """Who else may pull from the mirror: an AWS Organization, single accounts, or both."""

    organization_id: str | None = None
    accounts: tuple[str, ...] = ()
    stack_set: StackSet | None = None  # with organization_id only: the contract in every member account


@dataclass(frozen=True)
class Config:
    images: tuple[Image, ...]
    schedule: str = DEFAULT_SCHEDULE
    pull_through_cache: tuple[CacheRule, ...] = ()
    docker_hub_credentials: Credentials = field(default_factory=Credentials)
    sync: Sync = field(default_factory=Sync)
    repositories: Repositories = field(default_factory=Repositories)
    sharing: Sharing | None = None
    replication_regions: tuple[str, ...] = ()
    # Upstream registry host -> Secrets Manager secret (JSON `username`, `accessToken`) the mirror logs in with.
    registry_credentials: tuple[tuple[str, str], ...] = ()
    referrers: bool = DEFAULT_REFERRERS  # the default of every image's `referrers`
    verify: Verify | None = None  # the default of every image that does not say `verify` itself
    origin: str = field(default="mirror.yaml", compare=False)  # the file, for messages

    def rule_for(self, registry: str) -> CacheRule | None:
        return next((r for r in self.pull_through_cache if r.registry == registry), None)

    def credential_secrets(self) -> dict[str, str]:
        """Every upstream registry the mirror logs in to -> its secret: Docker Hub's, each cache rule's and
        `registry_credentials`. The copier uses them for direct copies, the cache rules for their upstream."""
        secrets = {DOCKER_HUB: self.docker_hub_credentials.secret_name}
        secrets.update((rule.registry, rule.credentials_secret) for rule in self.pull_through_cache
                       if rule.credentials_secret)
        secrets.update(self.registry_credentials)
        return secrets

    def verify_keys(self) -> list[KeySource]:
        """The distinct keys images are held to, in config order (the planner reads the stored ones)."""
        keys = [image.verify.source for image in self.images if image.verify is not None]
        return list(dict.fromkeys(keys))

    def to_spec(self) -> str:
        """`to_json`, gzipped and base64-encoded behind SPEC_PREFIX: what the stack stores in SSM for the planner.
        Compressed so that a few hundred images fit SSM's 8 KB (the same names and tags repeat); `parse_spec`."""
        packed = base64.b64encode(gzip.compress(self.to_json().encode(), mtime=0)).decode()
        return SPEC_PREFIX + packed

    def to_json(self) -> str:
        """The validated config, in the YAML file's own shape, as compact JSON."""
        creds = self.docker_hub_credentials
        data: dict[str, Any] = {
            "images": [
                {
                    k: v
                    for k, v in (
                        ("source", i.source),
                        ("tags", list(i.tags)),
                        ("tag_regex", i.tag_regex),
                        ("platforms", list(i.platforms)),
                        ("target", i.target),
                        # Only where it differs from the top-level default; `false` opts out of it.
                        ("verify", None if i.verify == self.verify else
                         {"cosign_public_key": i.verify.cosign_public_key} if i.verify else False),
                    )
                    if v or v is False
                } | ({"referrers": i.referrers} if i.referrers != self.referrers else {})
                for i in self.images
            ],
            "schedule": self.schedule,
            "pull_through_cache": [
                {k: v for k, v in asdict(r).items() if v is not None} for r in self.pull_through_cache
            ],
            "docker_hub_credentials": {"secret_name": creds.secret_name, "existing_secret": creds.existing_secret},
            "sync": asdict(self.sync),
            "repositories": asdict(self.repositories),
        }
        if self.sharing is not None:
            stack_set = self.sharing.stack_set
            data["sharing"] = {k: v for k, v in (
                ("organization_id", self.sharing.organization_id), ("accounts", list(self.sharing.accounts)),
                ("stack_set", stack_set and {"targets": list(stack_set.targets), "call_as": stack_set.call_as}),
            ) if v}
        if self.replication_regions:
            data["replication"] = {"regions": list(self.replication_regions)}
        if self.registry_credentials:
            data["registry_credentials"] = dict(self.registry_credentials)
        if self.referrers != DEFAULT_REFERRERS:
            data["referrers"] = self.referrers
        if self.verify is not None:
            data["verify"] = {"cosign_public_key": self.verify.cosign_public_key}
        if creds.ssm_username and creds.ssm_token:
            data["docker_hub_credentials"]["ssm_parameters"] = {
                "username": creds.ssm_username,
                "token": creds.ssm_token,
            }
        return json.dumps(data, separators=(",", ":"), sort_keys=True)


def partition(region: str) -> str:
    """The AWS partition a region name belongs to (ARN format, AWS General Reference)."""
    for start, name in (("cn-", "aws-cn"), ("us-gov-", "aws-us-gov"), ("us-isob-", "aws-iso-b"),
                        ("us-iso-", "aws-iso"), ("eusc-", "aws-eusc")):
        if region.startswith(start):
            return name
    return "aws"


SPEC_PREFIX = "gzip+base64:"


def parse_spec(text: str, *, origin: str = "mirror spec") -> Config:
    """The config `Config.to_spec` stored (plain JSON, as earlier versions stored it, is read too)."""
    if text.startswith(SPEC_PREFIX):
        try:
            text = gzip.decompress(base64.b64decode(text[len(SPEC_PREFIX):], validate=True)).decode()
        except (ValueError, OSError, EOFError) as err:
            raise ConfigError(f"{origin}: not a gzip+base64 spec: {err}") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ConfigError(f"{origin}: not JSON: {err}") from None
    return parse_config(data, origin=origin)


def default_repository(ref: Reference, prefix: str) -> str:
    """`mirror/<registry host>/<path>`; a port becomes `-PORT` (ECR names have no colon)."""
    host = ref.registry.lower().strip("[]").replace(":", "-")
    return f"{prefix}/{host}/{ref.repository}"


def load_config(path: str | Path) -> Config:
    from . import yaml_source  # only synth and the CLI read YAML; the planner reads JSON

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        data = yaml_source.load(raw)
    except yaml_source.SourceError as err:
        raise ConfigError(f"{path}: {err}") from None
    return parse_config(data, origin=str(path))


def parse_config(data: Any, *, origin: str = "mirror.yaml") -> Config:
    return _Parser(origin).config(data)


class _Parser:
    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.origin}: {where}: {message}")

    def mapping(self, value: Any, where: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a mapping, got {type(value).__name__}")
        unknown = sorted(set(value) - allowed, key=str)  # keys may be numbers, or a mix
        if unknown:
            raise self.fail(where, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
        return value

    def string(self, value: Any, where: str) -> str:
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            # YAML reads `3.10` as the number 3.1: the text as written says what to quote.
            text = getattr(value, "text", repr(value))
            read = "" if text == repr(value) else f" (read as {value!r})"
            raise self.fail(where, f"{text} is a YAML number{read}, not a string: quote it, \"{text}\"")
        if isinstance(value, bool):
            raise self.fail(where, f"{value!r} is a YAML boolean (from yes/no/on/off/true/false), not a string: "
                                   "quote it")
        raise self.fail(where, f"must be a non-empty string, got {value!r}")

    def string_list(self, value: Any, where: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(where, f"must be a list of strings, got {type(value).__name__}")
        return tuple(self.string(v, f"{where}[{i}]") for i, v in enumerate(value))

    def tag_list(self, value: Any, where: str) -> tuple[str, ...]:
        tags = self.string_list(value, where)
        for i, tag in enumerate(tags):
            if not TAG_RE.fullmatch(tag):
                raise self.fail(f"{where}[{i}]", f"{tag!r} is not a tag: 1 to 128 of A-Z a-z 0-9 _ . -, "
                                                 "not starting with . or - (OCI distribution spec)")
        return tags

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"must be true or false, got {value!r}")
        return value

    def integer(self, value: Any, where: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(where, f"must be an integer from {low} to {high}, got {value!r}")
        return value

    def config(self, data: Any) -> Config:
        if data is None:
            raise self.fail("images", "the file is empty; it needs at least an 'images:' list")
        top = self.mapping(
            data,
            "top level",
            {"images", "schedule", "pull_through_cache", "docker_hub_credentials", "sync", "repositories",
             "sharing", "replication", "registry_credentials", "referrers", "verify"},
        )
        repositories = self.repositories(top.get("repositories", {}))
        credentials = self.credentials(top.get("docker_hub_credentials", {}))
        registry_credentials = self.registry_credentials(top.get("registry_credentials"))
        rules = self.rules(top.get("pull_through_cache"), credentials, dict(registry_credentials))
        referrers = self.boolean(top.get("referrers", DEFAULT_REFERRERS), "referrers")
        verify = self.verify(top.get("verify"), "verify") if top.get("verify") is not None else None
        images = self.images(top.get("images"), rules, repositories, referrers, verify)
        used = {image.ref.registry for image in images} | {rule.registry for rule in rules if rule.credentials_secret}
        for host, _ in registry_credentials:
            if host not in used:  # most likely a typo: its images would be fetched anonymously
                raise self.fail(f"registry_credentials.{host}", f"no image and no cache rule uses {host!r}")
        return Config(
            images=images,
            schedule=self.schedule(top.get("schedule", DEFAULT_SCHEDULE)),
            pull_through_cache=rules,
            docker_hub_credentials=credentials,
            sync=self.sync(top.get("sync", {})),
            repositories=repositories,
            sharing=self.sharing(top.get("sharing")),
            replication_regions=self.replication(top.get("replication")),
            verify=verify,
            registry_credentials=registry_credentials,
            referrers=referrers,
            origin=self.origin,
        )

    def sharing(self, value: Any) -> Sharing | None:
        if value is None:
            return None
        raw = self.mapping(value, "sharing", {"organization_id", "accounts", "stack_set"})
        organization = raw.get("organization_id")
        if organization is not None and not (isinstance(organization, str) and _ORGANIZATION.fullmatch(organization)):
            raise self.fail("sharing.organization_id", f"{organization!r} is not an AWS Organizations id "
                                                       "('o-' and 10 to 32 lowercase letters or digits)")
        accounts = raw.get("accounts")
        if accounts is not None and not isinstance(accounts, list):
            raise self.fail("sharing.accounts", f"must be a list of 12-digit account ids, got {accounts!r}")
        ids: list[str] = []
        for i, account in enumerate(accounts or []):
            # An unquoted id is a YAML number, and one with a leading zero would lose it: ask for quotes.
            if not (isinstance(account, str) and _ACCOUNT.fullmatch(account)):
                raise self.fail(f"sharing.accounts[{i}]", f"{getattr(account, 'text', repr(account))} is not an "
                                                          "AWS account id (12 digits, quoted)")
            if account in ids:
                raise self.fail(f"sharing.accounts[{i}]", f"{account!r} is listed twice")
            ids.append(account)
        if organization is None and not ids:
            raise self.fail("sharing", "needs 'organization_id', 'accounts' or both")
        stack_set = self.stack_set(raw.get("stack_set"), organization)
        return Sharing(organization, tuple(ids), stack_set)

    def stack_set(self, value: Any, organization: str | None) -> StackSet | None:
        where = "sharing.stack_set"
        if value is None:  # the organization may pull; its accounts take the contract from the outputs
            return None
        if organization is None:
            raise self.fail(where, "needs sharing.organization_id (a StackSet reaches the accounts of an organization)")
        raw = self.mapping(value, where, {"targets", "call_as"})
        targets = raw.get("targets")
        if not isinstance(targets, list) or not targets:
            raise self.fail(f"{where}.targets", "must be a non-empty list: the organization's root id (r-...: every "
                                                f"account) or OU ids (ou-...), got {targets!r}")
        for i, target in enumerate(targets):
            if not (isinstance(target, str) and _STACK_SET_TARGET.fullmatch(target)):
                raise self.fail(f"{where}.targets[{i}]", f"{target!r} is not a root id (r- and 4 to 32 lowercase "
                                                         "letters or digits) or an OU id (ou-xxxx-xxxxxxxx); the "
                                                         "organization id (o-...) is not a target")
            if target in targets[:i]:
                raise self.fail(f"{where}.targets[{i}]", f"{target!r} is listed twice")
        call_as = raw.get("call_as", STACK_SET_CALL_AS[0])
        if call_as not in STACK_SET_CALL_AS:
            raise self.fail(f"{where}.call_as", f"must be DELEGATED_ADMIN (a member account registered as the "
                                                f"StackSets delegated administrator) or SELF (the management "
                                                f"account), got {call_as!r}")
        return StackSet(tuple(targets), call_as)

    def replication(self, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        raw = self.mapping(value, "replication", {"regions"})
        regions = raw.get("regions")
        if not isinstance(regions, list) or not regions:
            raise self.fail("replication.regions", f"must be a non-empty list of region names, got {regions!r}")
        # ECR: "up to 25 unique destinations across all rules" (user guide, private image replication).
        if len(regions) > 25:
            raise self.fail("replication.regions", f"{len(regions)} regions; ECR replicates to at most 25")
        names: list[str] = []
        for i, region in enumerate(regions):
            if not (isinstance(region, str) and _REGION.fullmatch(region)):
                raise self.fail(f"replication.regions[{i}]", f"{region!r} is not a region name like eu-west-1")
            if region in names:
                raise self.fail(f"replication.regions[{i}]", f"{region!r} is listed twice")
            # ECR: "Cross-Region replication is not supported between AWS partitions".
            if names and partition(region) != partition(names[0]):
                raise self.fail(f"replication.regions[{i}]", f"{region!r} is in partition {partition(region)}, "
                                f"{names[0]!r} in {partition(names[0])}; ECR replicates within one partition")
            names.append(region)
        return tuple(names)

    def registry_credentials(self, value: Any) -> tuple[tuple[str, str], ...]:
        if value is None:
            return ()
        if not isinstance(value, dict):
            raise self.fail("registry_credentials", f"must be a mapping of registry host to secret, got "
                                                    f"{type(value).__name__}")
        pairs: list[tuple[str, str]] = []
        for host, secret in value.items():
            where = f"registry_credentials.{host}"
            try:
                ref = parse(f"{host}/x") if isinstance(host, str) else None
            except ReferenceError:
                ref = None
            if ref is None or ref.registry != host or host != host.lower():
                raise self.fail(where, f"{host!r} is not a registry host like ghcr.io or registry.example.com:5000 "
                                       "(lowercase, as image references name it)")
            if host == DOCKER_HUB:
                raise self.fail(where, "Docker Hub's secret is docker_hub_credentials.secret_name")
            if not (isinstance(secret, str) and _SECRET_NAME.fullmatch(secret)):
                raise self.fail(where, f"{secret!r} is not a Secrets Manager secret name")
            pairs.append((host, secret))
        return tuple(pairs)

    def schedule(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self.fail("schedule", f"must be a string like 'rate(6 hours)', got {value!r}")
        # EventBridge's own rules (user guide, "Setting a schedule pattern for scheduled rules"): a rate's unit
        # is singular for 1 and plural above; cron takes six fields, with '?' in day-of-month or day-of-week.
        rate = _RATE.fullmatch(value)
        if rate:
            count, unit = int(rate.group(1)), rate.group(2).rstrip("s")
            if count < 1:
                raise self.fail("schedule", f"{value!r}: the rate must be 1 or more {unit}s")
            fixed = f"rate({count} {unit}{'s' if count > 1 else ''})"
            if value != fixed:
                raise self.fail("schedule", f"{value!r}: write {fixed!r} (EventBridge takes the singular for 1 "
                                            "and the plural above)")
            return value
        fields = value[5:-1].split() if value.startswith("cron(") and value.endswith(")") else []
        if fields and len(fields) != 6:
            # A Unix cron's five fields, every day of the week: its EventBridge form adds '?' and the year.
            fix = f": write 'cron({' '.join(fields[:4])} ? *)'" if len(fields) == 5 and fields[4] == "*" else ""
            raise self.fail("schedule", f"{value!r} has {len(fields)} fields; EventBridge's cron takes 6: minutes "
                                        "hours day-of-month month day-of-week year, with '?' in day-of-month or "
                                        f"day-of-week{fix}")
        if _CRON.fullmatch(value):
            if "?" not in (fields[2], fields[4]):
                raise self.fail("schedule", f"{value!r}: a cron expression needs '?' in day-of-month or day-of-week")
            return value
        raise self.fail("schedule", f"{value!r} is not an EventBridge 'rate(...)' or 'cron(...)' expression")

    def credentials(self, value: Any) -> Credentials:
        where = "docker_hub_credentials"
        raw = self.mapping(value, where, {"secret_name", "existing_secret", "ssm_parameters"})
        name = raw.get("secret_name", DEFAULT_SECRET)
        if not isinstance(name, str) or not name.startswith(SECRET_PREFIX) or len(name) <= len(SECRET_PREFIX):
            raise self.fail(
                f"{where}.secret_name", f"must start with {SECRET_PREFIX!r} (ECR pull-through cache requires it)"
            )
        existing = raw.get("existing_secret", False)
        if not isinstance(existing, bool):
            raise self.fail(f"{where}.existing_secret", "must be true or false")
        ssm = raw.get("ssm_parameters")
        user = token = None
        if ssm is not None:
            params = self.mapping(ssm, f"{where}.ssm_parameters", {"username", "token"})
            for key in ("username", "token"):
                if not isinstance(params.get(key), str) or not _SSM_NAME.fullmatch(params[key]):
                    raise self.fail(
                        f"{where}.ssm_parameters.{key}", "must be an SSM parameter name like /CodeBuild/DOCKER_HUB_ID"
                    )
            user, token = params["username"], params["token"]
        return Credentials(name, existing, user, token)

    def rules(self, value: Any, credentials: Credentials, registry_secrets: dict[str, str]) -> tuple[CacheRule, ...]:
        if value is None:
            value = [{"upstream": u} for u in DEFAULT_UPSTREAMS]
        if not isinstance(value, list):
            raise self.fail("pull_through_cache", "must be a list of {upstream, prefix} entries")
        rules: list[CacheRule] = []
        for i, item in enumerate(value):
            where = f"pull_through_cache[{i}]"
            raw = self.mapping(item, where, {"upstream", "prefix", "credentials_secret"})
            upstream = raw.get("upstream")
            if upstream not in UPSTREAMS:
                raise self.fail(f"{where}.upstream", f"unknown upstream {upstream!r} (known: {', '.join(UPSTREAMS)})")
            prefix = raw.get("prefix", upstream)
            if not isinstance(prefix, str) or not 2 <= len(prefix) <= 30 or not _PREFIX.fullmatch(prefix):
                raise self.fail(
                    f"{where}.prefix", f"{prefix!r} is not a legal ECR repository prefix (2-30 of a-z 0-9 . _ -)"
                )
            secret = raw.get("credentials_secret")
            key = f"{where}.credentials_secret"
            registry = UPSTREAMS[upstream].registry
            if secret is None and upstream == "docker-hub":
                secret = credentials.secret_name
            elif secret is None and registry in registry_secrets and UPSTREAMS[upstream].needs_credentials:
                # The rule takes the registry's credentials, so the copier and the cache log in as one user.
                # A rule that takes none (quay, ecr-public, k8s) stays anonymous; the secret serves direct copies.
                secret, key = registry_secrets[registry], f"registry_credentials.{registry}"
            elif secret is not None and registry_secrets.get(registry, secret) != secret:
                raise self.fail(key, f"{secret!r} differs from registry_credentials.{registry} "
                                     f"({registry_secrets[registry]!r}); name one secret")
            if not UPSTREAMS[upstream].needs_credentials and secret is not None:
                raise self.fail(key, f"{upstream} takes no credentials")
            if UPSTREAMS[upstream].needs_credentials and secret is None:
                raise self.fail(key, f"{upstream} needs a secret named {SECRET_PREFIX}... "
                                     f"(here or in registry_credentials.{registry})")
            # AWS::ECR::PullThroughCacheRule: the credential secret's name must carry this prefix.
            if secret is not None and not (isinstance(secret, str) and secret.startswith(SECRET_PREFIX)
                                           and len(secret) > len(SECRET_PREFIX)):
                raise self.fail(key, f"{secret!r}: a cache rule's secret must be named {SECRET_PREFIX}...")
            for other in rules:
                if other.prefix == prefix or other.upstream == upstream:
                    raise self.fail(where, f"duplicates the rule for {other.upstream!r} (prefix {other.prefix!r})")
            rules.append(CacheRule(upstream, prefix, secret))
        return tuple(rules)

    def images(self, value: Any, rules: tuple[CacheRule, ...], repos: Repositories,
               referrers: bool = DEFAULT_REFERRERS, verify: Verify | None = None) -> tuple[Image, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail("images", "must be a non-empty list of {source, tags | tag_regex} entries")
        images: list[Image] = []
        seen: dict[str, str] = {}
        for i, item in enumerate(value):
            source = item.get("source") if isinstance(item, dict) else None
            where = f"images[{i}]" + (f" ({source})" if isinstance(source, str) else "")
            image = self.image(item, where, rules, repos, referrers, verify)
            if image.repository in seen:
                raise self.fail(
                    f"{where}.target",
                    f"repository {image.repository!r} is also the target of {seen[image.repository]}; "
                    "merge the entries",
                )
            seen[image.repository] = where
            images.append(image)
        return tuple(images)

    def image(self, item: Any, where: str, rules: tuple[CacheRule, ...], repos: Repositories,
              referrers: bool = DEFAULT_REFERRERS, default_verify: Verify | None = None) -> Image:
        raw = self.mapping(item, where, {"source", "tags", "tag_regex", "platforms", "target", "referrers",
                                         "verify"})
        source = raw.get("source")
        if not isinstance(source, str):
            raise self.fail(f"{where}.source", "is required: an image reference such as 'python' or 'ghcr.io/org/app'")
        try:
            ref = parse(source)
        except ReferenceError as err:
            raise self.fail(f"{where}.source", str(err)) from None
        if ref.tag or ref.digest:
            raise self.fail(f"{where}.source", f"{source!r} names a tag or digest; list tags under 'tags' instead")
        tags = self.tag_list(raw.get("tags"), f"{where}.tags")
        regex = raw.get("tag_regex")
        if not tags and regex is None:
            raise self.fail(where, "needs 'tags' or 'tag_regex' (or both)")
        if regex is not None:
            if not isinstance(regex, str) or not regex:
                raise self.fail(f"{where}.tag_regex", "must be a non-empty string")
            try:
                re.compile(regex)
            except re.error as err:
                raise self.fail(f"{where}.tag_regex", f"invalid regex '{regex}': {err}") from None
        platforms = self.string_list(raw.get("platforms"), f"{where}.platforms")
        for n, platform in enumerate(platforms):
            self.platform(platform, f"{where}.platforms[{n}]")
        target = raw.get("target")
        if target is not None:
            if not isinstance(target, str) or not 2 <= len(target) <= 256 or not _ECR_NAME.fullmatch(target):
                raise self.fail(f"{where}.target", f"{target!r} is not a legal ECR repository name")
            if "/" not in target:
                # ECR creates the repository on the copier's first push from the creation template of its prefix;
                # a name without one matches only a ROOT template, which would apply to every repository of the
                # registry (ECR API reference, CreateRepositoryCreationTemplate prefix).
                raise self.fail(f"{where}.target", f"{target!r} has no '/': a mirrored repository takes its settings "
                                                   "from the creation template of its prefix; name one, like "
                                                   f"'mirror/{target}' or 'team/{target}'")
            repository = target
        else:
            repository = default_repository(ref, repos.prefix)
        for rule in rules:
            # A cache rule owns its prefix: ECR creates those repositories on first pull (docs/engine.md).
            if repository.startswith(rule.prefix + "/"):
                raise self.fail(
                    f"{where}.target", f"{repository!r} lies under the pull-through cache prefix {rule.prefix!r}"
                )
        verify = default_verify
        if raw.get("verify") is False:
            verify = None
        elif raw.get("verify") is not None:
            verify = self.verify(raw["verify"], f"{where}.verify")
        return Image(source, tags, regex, platforms, target, repository,
                     referrers=self.boolean(raw.get("referrers", referrers), f"{where}.referrers"), verify=verify)

    def verify(self, value: Any, where: str) -> Verify:
        """`{cosign_public_key: ...}`; an inline key is parsed here, a stored one when the planner reads it."""
        raw = self.mapping(value, where, {"cosign_public_key"})
        text = self.string(raw.get("cosign_public_key"), f"{where}.cosign_public_key")
        try:
            source = key_source(text)
            if source.kind == "pem":
                load_public_key(source.value)
        except ValueError as err:
            raise self.fail(f"{where}.cosign_public_key", str(err)) from None
        return Verify(source.value if source.kind == "pem" else text.strip())

    def platform(self, value: str, where: str) -> None:
        parts = value.split("/")
        ok = 2 <= len(parts) <= 3 and parts[0] in _OS and parts[1] in _ARCH
        if ok and len(parts) == 3:
            ok = bool(_VARIANTS.get(parts[1], _OTHER_VARIANT).fullmatch(parts[2]))
        if not ok:
            raise self.fail(where, f"{value!r} is not a platform like linux/amd64, linux/amd64/v3 or linux/arm/v7")

    def sync(self, value: Any) -> Sync:
        raw = self.mapping(value, "sync", {"quota_reserve", "max_concurrency", "planner_reserved_concurrency"})
        reserved = raw.get("planner_reserved_concurrency")
        return Sync(
            quota_reserve=self.integer(raw.get("quota_reserve", 20), "sync.quota_reserve", 0, 10_000),
            max_concurrency=self.integer(raw.get("max_concurrency", 4), "sync.max_concurrency", 2, 100),
            planner_reserved_concurrency=(None if reserved is None else self.integer(
                reserved, "sync.planner_reserved_concurrency", 1, 10)),
        )

    def repositories(self, value: Any) -> Repositories:
        raw = self.mapping(value, "repositories", {"prefix", "tag_mutability", "untagged_expiry_days"})
        prefix = raw.get("prefix", "mirror")
        if not isinstance(prefix, str) or not _ECR_NAME.fullmatch(prefix):
            raise self.fail("repositories.prefix", f"{prefix!r} is not a legal ECR repository name prefix")
        mutability = raw.get("tag_mutability", "MUTABLE")
        if mutability in IMMUTABLE_SETTINGS:
            # ECR refuses to move an immutable tag (ImageTagAlreadyExistsException), and the mirror moves every
            # tag it mirrors when upstream does. IMMUTABLE_WITH_EXCLUSION takes at most 5 WILDCARD tag filters
            # (botocore's ECR model, ImageTagMutabilityExclusionFilters): only '*' covers every tag, which is MUTABLE.
            raise self.fail("repositories.tag_mutability", f"{mutability} is refused: the mirror moves a tag whenever "
                                                           "upstream does (python:3.13-slim is rebuilt), which ECR "
                                                           "refuses on an immutable tag, and an exclusion covering "
                                                           "every mirrored tag is MUTABLE; use MUTABLE")
        if mutability != "MUTABLE":
            raise self.fail("repositories.tag_mutability", f"must be MUTABLE, got {mutability!r}")
        days = self.integer(raw.get("untagged_expiry_days", 7), "repositories.untagged_expiry_days", 1, 3650)
        return Repositories(prefix, mutability, days)
