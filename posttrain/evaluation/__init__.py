"""Evaluation: `stats` (intervals, win rates, paired tests), `countdown` (pass@k), `win_rate`, `text_metrics`."""
