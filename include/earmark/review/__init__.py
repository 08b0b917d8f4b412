"""The RA review queue (claims, decisions, the audit trail) and its statistics."""
