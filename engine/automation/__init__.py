"""The automation layer: what starts runs without a person at the keyboard (cron schedules,
file sensors) and backfills, each recorded exactly once through the history layer.
"""
