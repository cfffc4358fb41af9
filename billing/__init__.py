"""Billing (SPEC §7): fees, balances and invoices, computed from catalog rows and the lake.

Pure computation: the functions here take catalog rows, DuckDB connections and lists of lake
files, never open a store or write a file (``pipelines.ledger`` does that).
"""
