#!/usr/bin/env python3
"""Invalidation lag between two gateway instances, measured from outside.

Each trial assigns (or removes) a probe role to bob through gateway A's admin
API, then asks gateway B, over a kept-alive connection and as fast as it
answers, whether bob may read reports, until B's decision changes. The lag is
A's 2xx answer → B's first changed decision: the relay, the stream, B's
consumer, and B's next read. Prints one JSON object: trials and percentiles.

    invalidation_lag.py A_PORT B_PORT ALICE_SESSION TRIALS
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
    return response.status, payload


def main():
    a_port, b_port, token, trials = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    a = http.client.HTTPConnection("127.0.0.1", int(a_port), timeout=5)
    b = http.client.HTTPConnection("127.0.0.1", int(b_port), timeout=5)
    base = "/admin/api/v1/tenants/acme"
    status, _ = call(a, "POST", f"{base}/roles", token, {"name": "lag-probe"})
    assert status in (201, 409), status
    status, _ = call(a, "POST", f"{base}/roles/lag-probe/permissions", token,
                     {"resource": "reports:*", "action": "read"})
    assert status in (201, 409), status
    question = {"subject": "bob", "resource": "reports:1", "action": "read"}
    lags, polls = [], []
    for i in range(trials):
        assign = i % 2 == 0
        if assign:
            status, _ = call(a, "PUT", f"{base}/users/bob/roles/lag-probe", token, {})
        else:
            status, _ = call(a, "DELETE", f"{base}/users/bob/roles/lag-probe", token)
        done = time.perf_counter()
        assert status in (200, 204), status
        n = 0
        while True:
            n += 1
            status, payload = call(b, "POST", "/v1/authz/check", token, question)
            assert status == 200, (status, payload)
            if json.loads(payload)["allowed"] == assign:
                break
            if time.perf_counter() - done > 5:
                sys.exit("B did not see the change within 5 s")
        lags.append((time.perf_counter() - done) * 1000)
        polls.append(n)
    lags.sort()
    pick = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]
    print(json.dumps({
        "trials": trials,
        "p50_ms": round(pick(0.50), 3),
        "p99_ms": round(pick(0.99), 3),
        "max_ms": round(lags[-1], 3),
        "mean_ms": round(statistics.mean(lags), 3),
        "median_polls": statistics.median(polls),
    }))


if __name__ == "__main__":
    main()
