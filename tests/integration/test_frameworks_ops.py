"""Operator ergonomics seen in migrations: a 100/0 split written as weight 0."""

from __future__ import annotations

import random

from tests.integration.test_observability import scrape
from tests.integration.test_routing import HI, backend, routed


async def test_a_zero_weight_arm_exists_and_gets_nothing(start_fake, start_gateway):
    """weight: 0 is accepted: every request goes to the other arm, whatever the roll."""
    old, new = await start_fake(), await start_fake()
    gw = await start_gateway(routed([backend("old", old.url), backend("new", new.url)],
                                    {"targets": [{"backend": "old", "weight": 100}, {"backend": "new", "weight": 0}],
                                     "sticky": []}), rng=random.Random(7))
    async with gw.client() as client:
        for _ in range(12):
            await client.chat.completions.create(model="llama3.2", messages=HI)
    assert (len(old.fake.bodies("/api/chat")), len(new.fake.bodies("/api/chat"))) == (12, 0)
    assert [t.weight for t in gw.config.policy.routes[0].targets] == [100.0, 0.0]
    split = {k: v for k, v in scrape(gw).items() if k.startswith("proxy_split_arm_total")}
    assert split.get('proxy_split_arm_total{arm="old:*",route="chat"}') == 12.0
