"""ModaVerse LLM service."""
