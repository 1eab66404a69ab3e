"""The path of a scan after the API: queue, worker, runner, reconciler."""
