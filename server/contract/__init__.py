"""What two processes or two hosts agree on, typed and versioned, each
reader beside its writer: the release format (release.py: controller →
workers), the state directory's layout and its live/verified records
(layout.py: controller ↔ gunicorn master ↔ workers), the workers' reports
(report.py: workers → master and controller) and a fleet's records in etcd
(fleet.py: host ↔ host)."""
