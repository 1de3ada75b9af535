"""ModaVerse generator service."""
