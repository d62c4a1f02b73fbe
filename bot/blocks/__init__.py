"""Pure Block Kit builders and their plain-text rendering."""
