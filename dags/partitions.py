"""Partitions: UTC days for the daily summaries, UTC calendar months for invoices (SPEC §7).

The first partition is ``START``; a day or month exists once it has ended (Dagster's
default ``end_offset=0``), which is what invoicing needs (only ended months are built)."""

import dagster as dg

START = "2025-01-01"

daily = dg.DailyPartitionsDefinition(start_date=START, timezone="UTC")
monthly = dg.MonthlyPartitionsDefinition(start_date=START, timezone="UTC")
