"""tap-closum: a Singer tap for the Closum lead-management API."""
