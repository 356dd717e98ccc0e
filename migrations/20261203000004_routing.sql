-- Grey routing (issue 13). Postgres holds the routing configuration; the gateways
-- mirror it into Redis, where the selection scripts (lua/route_*.lua) read it.
--
-- * A split sends `canary_buckets` of 10 000 stable buckets to the canary (30% =
--   3000), chosen by a hash of (service, salt, tenant[, user]): the same tenants stay
--   on the canary as the share grows; a new salt reshuffles who goes first.
-- * `per_user` splits one tenant's users between the versions (the default, false,
--   keeps a whole tenant on one side: no cookie, no flapping).
-- * An instance without `heartbeat_ttl_ms` is static (configuration, e.g. the demo
--   bootstrap): alive until deregistered. With it, the instance drops out of selection
--   when it has not sent a heartbeat for that long.
-- * Every change to services, versions, instances or rollouts leaves a
--   `routing.changed` outbox event naming the service, whoever wrote it, so the relay
--   re-mirrors that service at once (the insert NOTIFYs the relays).

ALTER TABLE tenant_rollouts
    ADD COLUMN canary_buckets integer NOT NULL DEFAULT 0
        CHECK (canary_buckets BETWEEN 0 AND 10000),
    ADD COLUMN salt text NOT NULL DEFAULT 'r1'
        CHECK (salt ~ '^[A-Za-z0-9_-]{1,64}$'),
    ADD COLUMN per_user boolean NOT NULL DEFAULT false;
UPDATE tenant_rollouts SET canary_buckets = canary_percent * 100;
-- Its CHECK constraints go with it.
ALTER TABLE tenant_rollouts DROP COLUMN canary_percent;
ALTER TABLE tenant_rollouts DROP COLUMN sticky;
ALTER TABLE tenant_rollouts
    ADD CONSTRAINT tenant_rollouts_canary_named
        CHECK (canary_version_id IS NOT NULL OR canary_buckets = 0);

ALTER TABLE service_instances
    ADD COLUMN heartbeat_ttl_ms integer CHECK (heartbeat_ttl_ms BETWEEN 1000 AND 3600000);

CREATE FUNCTION routing_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_service uuid := COALESCE(NEW.service_id, OLD.service_id);
    service_name text;
BEGIN
    SELECT name INTO service_name FROM services WHERE id = row_service;
    IF service_name IS NOT NULL THEN
        INSERT INTO outbox_events (tenant_id, kind, payload)
        VALUES (NULL, 'routing.changed',
                jsonb_build_object('service', service_name, 'table', TG_TABLE_NAME,
                                   'change', lower(TG_OP)));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER service_versions_routing_changed AFTER INSERT OR UPDATE OR DELETE ON service_versions
    FOR EACH ROW EXECUTE FUNCTION routing_changed();
CREATE TRIGGER service_instances_routing_changed AFTER INSERT OR UPDATE OR DELETE ON service_instances
    FOR EACH ROW EXECUTE FUNCTION routing_changed();
CREATE TRIGGER tenant_rollouts_routing_changed AFTER INSERT OR UPDATE OR DELETE ON tenant_rollouts
    FOR EACH ROW EXECUTE FUNCTION routing_changed();

CREATE FUNCTION services_routing_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_events (tenant_id, kind, payload)
    VALUES (NULL, 'routing.changed',
            jsonb_build_object('service', COALESCE(NEW.name, OLD.name), 'table', TG_TABLE_NAME,
                               'change', lower(TG_OP)));
    RETURN NULL;
END
$$;

CREATE TRIGGER services_routing_changed AFTER INSERT OR UPDATE OR DELETE ON services
    FOR EACH ROW EXECUTE FUNCTION services_routing_changed();
