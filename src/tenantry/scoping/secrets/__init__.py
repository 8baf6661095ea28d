"""Tenant-scoped, envelope-encrypted secrets (``ctx.secrets``)."""
