"""Countdown: `verifier` (score a completion: pure, exact, bounded), `solver`, `puzzles` (generation, warmstart)."""
