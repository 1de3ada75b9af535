"""ModaVerse encoder service: ImageBind + adaptors."""
