"""ModaVerse web front door: an OpenAI-compatible HTTP API and a browser playground, in front of the gateway."""
