"""What happens to a ticket, in one place.

`fire()` (fire.py) is the seam: every event on a ticket is recorded, runs the
admins' rules for its kind, lets the SLA clocks follow and queues the
notices one table names. Stages, the SLA scan, the jobs and the surveys
decide facts and call it; nothing else evaluates rules or queues mail.
Context (context.py) is what all of them work through: one batch's ledger,
blobs and clock.
"""
