"""Markers a tool author puts on parameters so Tenantry checks them before the tool runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

__all__ = ["ResourceArgument", "ResourcePath", "ResourcePrefix", "find_resource_arguments"]


@dataclass(frozen=True, slots=True)
class ResourceArgument:
    """Marks a ``str`` parameter as naming a resource in the tenant's partition.

    Before the handler runs, the value is normalised and checked against the credential's
    ``resource_prefix``; a traversal or foreign prefix is refused and audited.
    """

    kind: Literal["path", "prefix"] = "path"


ResourcePath = Annotated[str, ResourceArgument("path")]
"""A file path relative to the tenant's root, checked before the tool runs."""

ResourcePrefix = Annotated[str, ResourceArgument("prefix")]
"""A listing prefix: like a path, but an ancestor of the credential's prefix is allowed
(the listing is then narrowed to the credential's prefix)."""


def find_resource_arguments(fn: Callable[..., Any]) -> Mapping[str, ResourceArgument]:
    hints = get_type_hints(fn, include_extras=True)
    found: dict[str, ResourceArgument] = {}
    for name, hint in hints.items():
        if get_origin(hint) is Annotated:
            for meta in get_args(hint)[1:]:
                if isinstance(meta, ResourceArgument):
                    found[name] = meta
    return found
