"""The dispatcher process: requeues jobs whose lease expired, publishes what waits."""
