"""Signed webhook and callback deliveries, fed by the ``scan_events`` outbox.

    dispatcher.py  outbox rows → delivery rows (cursor advanced in the same transaction)
    delivery.py    the delivery state machine: pending → succeeded | failed, retries with jitter
    egress.py      where deliveries may go (checked at creation and again after DNS at send time)
    signing.py     X-CertIX-* headers and the HMAC-SHA256 signature
    secretbox.py   webhook and callback secrets, AES-GCM encrypted at rest
    store.py       webhook bodies, rows and JSON
    service.py     the above assembled for the serve process
"""
