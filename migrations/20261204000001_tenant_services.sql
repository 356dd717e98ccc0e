-- Which services each tenant may use (issue 19, finding 12b). Until now any tenant
-- administrator could route their tenant to any active version of any service, and the
-- default version served every tenant. Now a tenant reaches only the services the
-- platform has made available to it (`PUT /admin/api/v1/services/{s}/tenants/{t}`):
-- the proxy, `/v1/verify?service=` and `/v1/routing/resolve` refuse the others, and a
-- rollout or subject rule can exist only for an available pair (the foreign keys
-- below), so withdrawing a service from a tenant removes its rollout and rules with it.
--
-- Existing deployments keep what their tenants could reach before: every existing
-- (tenant, service) pair is made available here. Services and tenants created from now
-- on start with none.

CREATE TABLE tenant_services (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    service_id  uuid NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    granted_by  uuid,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, service_id)
);
CREATE INDEX tenant_services_service_idx ON tenant_services (service_id);

INSERT INTO tenant_services (tenant_id, service_id)
SELECT t.id, s.id FROM tenants t CROSS JOIN services s;

ALTER TABLE tenant_rollouts
    ADD CONSTRAINT tenant_rollouts_available
        FOREIGN KEY (tenant_id, service_id) REFERENCES tenant_services (tenant_id, service_id)
        ON DELETE CASCADE;
ALTER TABLE service_subject_rules
    ADD CONSTRAINT service_subject_rules_available
        FOREIGN KEY (tenant_id, service_id) REFERENCES tenant_services (tenant_id, service_id)
        ON DELETE CASCADE;

-- Every gateway keeps the set in its mirror of the service.
CREATE TRIGGER tenant_services_routing_changed AFTER INSERT OR UPDATE OR DELETE ON tenant_services
    FOR EACH ROW EXECUTE FUNCTION routing_changed();
