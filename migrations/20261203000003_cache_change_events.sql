-- Cache invalidation for every writer (issue 12). Cached entries of a tenant are keyed
-- by its data version, so any change to what the caches hold must bump the version and
-- leave an outbox event that the relay publishes to every gateway. Role, grant,
-- assignment and policy writes do that in `apply_change`; these triggers cover users and
-- tenants, whoever writes them (admin API, CLI, SQL by hand), in the writer's own
-- transaction. A NOTIFY on every outbox insert wakes the relays at once, so even a hand
-- edit is in force on every instance within milliseconds, not at the next poll.

CREATE FUNCTION users_cache_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_tenant uuid := COALESCE(NEW.tenant_id, OLD.tenant_id);
    row_user   uuid := COALESCE(NEW.id, OLD.id);
    new_version bigint;
BEGIN
    IF TG_OP = 'UPDATE'
       AND NEW.status IS NOT DISTINCT FROM OLD.status
       AND NEW.attributes IS NOT DISTINCT FROM OLD.attributes
       AND NEW.username_display IS NOT DISTINCT FROM OLD.username_display THEN
        RETURN NULL;
    END IF;
    UPDATE tenant_data_versions SET version = version + 1, updated_at = now()
        WHERE tenant_id = row_tenant RETURNING version INTO new_version;
    IF new_version IS NOT NULL THEN
        INSERT INTO outbox_events (tenant_id, kind, payload)
        VALUES (row_tenant, 'user.changed',
                jsonb_build_object('data_version', new_version, 'user_id', row_user,
                                   'change', lower(TG_OP)));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER users_cache_changed AFTER UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION users_cache_changed();

CREATE FUNCTION tenants_cache_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    new_version bigint;
BEGIN
    IF TG_OP = 'UPDATE'
       AND NEW.status IS NOT DISTINCT FROM OLD.status
       AND NEW.slug IS NOT DISTINCT FROM OLD.slug
       AND NEW.display_name IS NOT DISTINCT FROM OLD.display_name
       AND NEW.settings IS NOT DISTINCT FROM OLD.settings
       AND NEW.allowed_return_origins IS NOT DISTINCT FROM OLD.allowed_return_origins THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        UPDATE tenant_data_versions SET version = version + 1, updated_at = now()
            WHERE tenant_id = NEW.id RETURNING version INTO new_version;
    END IF;
    -- Created and deleted tenants change the set of known slugs (see the
    -- gateway's slug index); updates change what is cached about the tenant.
    INSERT INTO outbox_events (tenant_id, kind, payload)
    VALUES (COALESCE(NEW.id, OLD.id), 'tenant.changed',
            jsonb_build_object('data_version', new_version, 'change', lower(TG_OP),
                               'slug', COALESCE(NEW.slug, OLD.slug)));
    RETURN NULL;
END
$$;

CREATE TRIGGER tenants_cache_changed AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION tenants_cache_changed();

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gatehouse_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox_events
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
