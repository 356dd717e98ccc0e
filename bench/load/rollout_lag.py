#!/usr/bin/env python3
"""Rollout lag between two gateway instances, measured from outside.

Each trial changes acme's rollout of `orders` through gateway A's admin API:
even trials send every bucket to the canary (v2), odd ones roll back (v1).
Then it asks gateway B's proxy, over a kept-alive connection and as fast as it
answers, for /svc/orders/items as bob, until the answer's
X-Gatehouse-Upstream-Version changes. The lag is A's 2xx answer → B's first
request routed the new way: the trigger's event, the relay, the stream, B's
mirror of the service into Redis, and B's next pick. Prints one JSON object:
trials and percentiles, for rollbacks alone and for every change.

    rollout_lag.py A_PORT B_PORT ALICE_SESSION BOB_JWT TRIALS
"""

import http.client
import json
import statistics
import sys
import time


def call(conn, method, path, token, body=None):
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        data = json.dumps(body)
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    payload = response.read()
    return response.status, response.getheader("x-gatehouse-upstream-version"), payload


def percentiles(lags):
    lags = sorted(lags)
    pick = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]
    return {
        "trials": len(lags),
        "p50_ms": round(pick(0.50), 3),
        "p99_ms": round(pick(0.99), 3),
        "max_ms": round(lags[-1], 3),
        "mean_ms": round(statistics.mean(lags), 3),
    }


def main():
    a_port, b_port, admin, bob, trials = (
        sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    a = http.client.HTTPConnection("127.0.0.1", int(a_port), timeout=5)
    b = http.client.HTTPConnection("127.0.0.1", int(b_port), timeout=5)
    rollout = "/admin/api/v1/tenants/acme/rollouts/orders"
    rollbacks, changes = [], []
    for i in range(trials):
        to_canary = i % 2 == 0
        if to_canary:
            status, _, payload = call(a, "PUT", rollout, admin,
                                      {"stable": "v1", "canary": "v2", "percent": 100})
        else:
            status, _, payload = call(a, "POST", f"{rollout}/rollback", admin)
        done = time.perf_counter()
        assert status == 200, (status, payload)
        want = "v2" if to_canary else "v1"
        while True:
            status, version, payload = call(b, "GET", "/svc/orders/items", bob)
            assert status == 200, (status, payload)
            if version == want:
                break
            if time.perf_counter() - done > 5:
                sys.exit(f"B did not route acme to {want} within 5 s")
        lag = (time.perf_counter() - done) * 1000
        changes.append(lag)
        if not to_canary:
            rollbacks.append(lag)
    print(json.dumps({"rollback": percentiles(rollbacks), "any_change": percentiles(changes)}))


if __name__ == "__main__":
    main()
