-- Subject rules (issue 13): a tenant's users holding a role, or an attribute with a
-- given value (e.g. beta testers), go to a version of a service, whatever the
-- tenant's rollout says. The first matching rule by `position` wins. Mirrored into
-- every gateway's memory with the service (the trigger writes `routing.changed`);
-- the gateway matches the caller's effective roles and attributes and hands the
-- version to the pick script as its forced version.

CREATE TABLE service_subject_rules (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    service_id      uuid NOT NULL,
    version_id      uuid NOT NULL,
    role            text CHECK (role ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    attribute       text CHECK (attribute ~ '^[A-Za-z_][A-Za-z0-9_]{0,62}$'),
    equals          jsonb,
    position        integer NOT NULL DEFAULT 0 CHECK (position BETWEEN 0 AND 1000000),
    created_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (service_id, version_id) REFERENCES service_versions (service_id, id) ON DELETE CASCADE,
    CHECK ((role IS NOT NULL) <> (attribute IS NOT NULL)),
    CHECK ((attribute IS NULL) = (equals IS NULL)),
    CHECK (equals IS NULL OR octet_length(equals::text) <= 1024)
);
CREATE INDEX service_subject_rules_lookup_idx ON service_subject_rules (service_id, tenant_id, position);

CREATE TRIGGER service_subject_rules_routing_changed AFTER INSERT OR UPDATE OR DELETE ON service_subject_rules
    FOR EACH ROW EXECUTE FUNCTION routing_changed();
