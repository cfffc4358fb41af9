"""The real-time app (SPEC §9): live balances, alerts and call authorization."""
