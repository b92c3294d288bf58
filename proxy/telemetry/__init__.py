"""What the gateway tells operators: Prometheus metrics (``metrics``), the per-request tally applied
on scrape (``tally``), structured logs and the request log (``logs``)."""
