"""A sweep's settings: where it reads and writes, how it runs. Frozen and validated before anything
is created; the command line builds one from its arguments."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from raydistill.config import MAX_SEED, ConfigError

NAME_PATTERN = re.compile(r"[^/\\\x00-\x1f]{1,100}")


@dataclass(frozen=True)
class SweepOptions:
    data_root: str = "data"
    download: bool = False
    results: Path = Path("results")
    tracking_uri: str | None = None
    address: str | None = None
    max_concurrent: int | None = None
    seeds: tuple[int, ...] = (0,)
    name: str | None = None
    max_failures: int = 1
    cpus: int | None = None  # logical CPUs of a local Ray (default: the machine's cores)
    fixed: Mapping[str, object] = field(default_factory=dict)  # settings added to every cell
    only: tuple[str, ...] = ()  # run only the cells whose name matches one of these shell patterns

    def validate(self) -> "SweepOptions":
        if self.max_concurrent is not None and not 1 <= self.max_concurrent <= 10_000:
            raise ConfigError(f"max-concurrent must be an integer from 1 to 10000 (or left out for as many as "
                              f"resources allow), got {self.max_concurrent}")
        if self.cpus is not None and not 1 <= self.cpus <= 4096:
            raise ConfigError(f"cpus must be an integer from 1 to 4096, got {self.cpus}")
        if self.cpus is not None and self.address is not None:
            raise ConfigError("--cpus sizes a local Ray; a cluster given with --address has its own resources")
        if not 0 <= self.max_failures <= 100:
            raise ConfigError(f"max-failures must be an integer from 0 to 100, got {self.max_failures}")
        if not self.seeds:
            raise ConfigError("seeds: give at least one seed")
        for seed in self.seeds:
            if not 0 <= seed <= MAX_SEED:
                raise ConfigError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed}")
        if self.name is not None and (not NAME_PATTERN.fullmatch(self.name) or self.name.strip(". ") == ""
                                      or self.name.startswith(".")):
            raise ConfigError(f"sweep name {self.name!r} is not allowed: use 1-100 characters without '/', '\\' or "
                              "control characters, not starting with '.' (it names a folder under --results)")
        return self
