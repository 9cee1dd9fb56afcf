OWNER = "the team"  # a package named like the mirror repository's own, which must not be shadowed
