"""The embedded instruction tasks: `families` (task kinds), `tasks` (the generator and the rule checker)."""
