"""Tenant-scoped vector search (``ctx.vectors``)."""
