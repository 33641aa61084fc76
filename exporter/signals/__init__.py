"""Per-record signals derived from normalized LLM records (token counts, etc.)."""
