"""The soak test: a real `dagtop daemon` driven for minutes by schedules, sensors, CLI runs,
backfills, readers and kill -9 (see soak.py)."""
