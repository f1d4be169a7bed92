"""The migration runtime: run lock, lock-timeout retries, run history, checksums, settings."""
