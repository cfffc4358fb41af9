"""The Dagster ``Definitions``: invoicing, re-rating and recalculation (SPEC §7)."""
