-- How each service's instances are chosen (issue 13): the selection script the
-- gateways run for it. A change re-mirrors the service (the services trigger of
-- 20261203000004 writes a routing.changed event).
ALTER TABLE services ADD COLUMN strategy text NOT NULL DEFAULT 'weighted'
    CHECK (strategy IN ('round_robin', 'weighted', 'least_connections', 'random', 'user_hash'));
