"""A tenant's whole life cycle across every store: export (``tenant export``) and erasure
(``tenant delete``). :mod:`tenantry.lifecycle.registry` is the one place that knows every
store able to hold a tenant's data."""
