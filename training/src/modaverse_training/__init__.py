"""ModaVerse I/O-alignment training: data, single-stage trainer, export."""
