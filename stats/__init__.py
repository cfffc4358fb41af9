"""DuckDB queries over the lake: ASR, ACD, PDD, NER, channels, CPS (SPEC §6)."""
