"""The Airflow side: the seam to its connections and context, sensors, deadlines, mail callbacks."""
