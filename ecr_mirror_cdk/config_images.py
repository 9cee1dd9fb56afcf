"""The sections that say what is mirrored and from where: `images`, `pull_through_cache`, `docker_hub_credentials`
and `registry_credentials`."""

from __future__ import annotations

import re
from typing import Any

from .config import (
    DEFAULT_REFERRERS,
    DEFAULT_SECRET,
    DEFAULT_UPSTREAMS,
    SECRET_PREFIX,
    UPSTREAMS,
    CacheRule,
    Credentials,
    Image,
    Repositories,
    Verify,
    default_repository,
)
from .config_fields import ECR_NAME, Fields
from .reference import DOCKER_HUB, ReferenceError, parse
from .signing_key import SECRET_NAME, key_source, load_public_key

_PREFIX = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
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
# Secrets Manager secret names: 1-512 of letters, digits and /_+=.@-.


class ImageSections(Fields):
    """Part of the parser (`config_parse._Parser`): one method per section or entry."""

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
            if not isinstance(target, str) or not 2 <= len(target) <= 256 or not ECR_NAME.fullmatch(target):
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
            if not (isinstance(secret, str) and SECRET_NAME.fullmatch(secret)):
                raise self.fail(where, f"{secret!r} is not a Secrets Manager secret name")
            pairs.append((host, secret))
        return tuple(pairs)
