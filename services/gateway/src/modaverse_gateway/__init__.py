"""ModaVerse gateway: the public any-to-any chat API."""
