"""Benchmarks behind `investo bench …`: they print figures, they assert nothing."""
