-- Gatehouse schema: the source of truth (L3) for every part of the product.
-- Written once for the whole product so later features add behaviour, not churn.
-- Conventions: every tenant-owned row carries tenant_id and every lookup on the
-- hot path has an index that starts with tenant_id; timestamps are timestamptz;
-- slugs/names are validated in Rust and double-checked here with CHECKs.

-- ---------------------------------------------------------------- tenants
CREATE TABLE tenants (
    id                     uuid PRIMARY KEY,
    slug                   text NOT NULL UNIQUE
                           CHECK (slug ~ '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$'),
    display_name           text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    status                 text NOT NULL DEFAULT 'active'
                           CHECK (status IN ('active', 'disabled')),
    -- Origins (scheme://host[:port]) that login may redirect back to: open-redirect guard.
    allowed_return_origins text[] NOT NULL DEFAULT '{}',
    -- Per-tenant knobs (throttle limits, request->action mapping, ...), validated in Rust.
    settings               jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);

-- Bumped in the same transaction as any change to a tenant's authorisation data
-- (roles, grants, assignments, policies, rollouts). Cache keys embed it, so a bump
-- makes every older cached entry unreachable at once.
CREATE TABLE tenant_data_versions (
    tenant_id  uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    version    bigint NOT NULL DEFAULT 1 CHECK (version > 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------- users
CREATE TABLE users (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- NFKC, case-folded, trimmed: the form used for uniqueness and login lookup.
    username_normalized text NOT NULL CHECK (length(username_normalized) BETWEEN 1 AND 128),
    -- What the user typed at creation, for display.
    username_display    text NOT NULL CHECK (length(username_display) BETWEEN 1 AND 128),
    display_name        text,
    email               text,
    -- argon2id PHC string; never leaves Postgres (never cached in Redis).
    password_hash       text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    status              text NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'disabled')),
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    attributes          jsonb NOT NULL DEFAULT '{}'::jsonb, -- ABAC subject.* attributes
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, username_normalized),
    UNIQUE (tenant_id, id)
);

-- ---------------------------------------------------------------- roles and grants
CREATE TABLE roles (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_.:-]{0,63}$'),
    description text NOT NULL DEFAULT '',
    -- Inheritance: a role has every grant of its parent. Same tenant, no cycles and
    -- bounded depth are enforced by the trigger below.
    parent_id   uuid REFERENCES roles (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, id),
    CHECK (parent_id IS NULL OR parent_id <> id)
);
CREATE INDEX roles_parent_idx ON roles (tenant_id, parent_id) WHERE parent_id IS NOT NULL;

-- Rejects a parent link to another tenant's role, a cycle, or a chain deeper than the
-- limit, so no writer (API, CLI, psql) can store a hierarchy the engine must defend against.
CREATE FUNCTION roles_check_hierarchy() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    cursor_id uuid := NEW.parent_id;
    depth     int  := 1;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM roles WHERE id = NEW.parent_id AND tenant_id = NEW.tenant_id) THEN
        RAISE EXCEPTION 'parent role of % is not a role of the same tenant', NEW.name
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'roles_parent_same_tenant';
    END IF;
    WHILE cursor_id IS NOT NULL LOOP
        IF cursor_id = NEW.id THEN
            RAISE EXCEPTION 'role hierarchy cycle through role %', NEW.name
                USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'roles_no_cycle';
        END IF;
        depth := depth + 1;
        IF depth > 16 THEN
            RAISE EXCEPTION 'role hierarchy deeper than 16 levels at role %', NEW.name
                USING ERRCODE = 'integrity_constraint_violation', CONSTRAINT = 'roles_max_depth';
        END IF;
        SELECT parent_id INTO cursor_id FROM roles WHERE id = cursor_id;
    END LOOP;
    RETURN NEW;
END $$;
CREATE TRIGGER roles_hierarchy_guard
    BEFORE INSERT OR UPDATE OF parent_id ON roles
    FOR EACH ROW WHEN (NEW.parent_id IS NOT NULL)
    EXECUTE FUNCTION roles_check_hierarchy();

-- A grant lets a role perform `action` on resources matching `resource_pattern`
-- (`orders:*`, `*`, exact names). Patterns are validated in Rust.
CREATE TABLE role_permissions (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    role_id          uuid NOT NULL,
    resource_pattern text NOT NULL CHECK (length(resource_pattern) BETWEEN 1 AND 256),
    action           text NOT NULL CHECK (length(action) BETWEEN 1 AND 64),
    created_at       timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, role_id) REFERENCES roles (tenant_id, id) ON DELETE CASCADE,
    UNIQUE (role_id, resource_pattern, action)
);
CREATE INDEX role_permissions_tenant_idx ON role_permissions (tenant_id, role_id);

CREATE TABLE user_roles (
    tenant_id  uuid NOT NULL,
    user_id    uuid NOT NULL,
    role_id    uuid NOT NULL,
    -- Honoured at decision time; NULL means no expiry.
    expires_at timestamptz,
    granted_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, role_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, role_id) REFERENCES roles (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX user_roles_tenant_idx ON user_roles (tenant_id, user_id);
CREATE INDEX user_roles_role_idx ON user_roles (role_id);

-- ---------------------------------------------------------------- ABAC policies
CREATE TABLE policies (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_.:-]{0,63}$'),
    description text NOT NULL DEFAULT '',
    -- Higher priority is evaluated first; within a priority deny overrides.
    priority    integer NOT NULL DEFAULT 0,
    effect      text NOT NULL CHECK (effect IN ('permit', 'deny')),
    -- The policy document (target + conditions), validated against the JSON Schema in Rust.
    document    jsonb NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    -- Optimistic concurrency for admin edits.
    version     integer NOT NULL DEFAULT 1 CHECK (version > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);
CREATE INDEX policies_active_idx ON policies (tenant_id, priority DESC) WHERE active;

-- ---------------------------------------------------------------- signing keys
CREATE TABLE signing_keys (
    kid                   text PRIMARY KEY CHECK (length(kid) BETWEEN 8 AND 64),
    alg                   text NOT NULL CHECK (alg IN ('EdDSA', 'RS256', 'ES256')),
    -- AEAD ciphertext (nonce || ciphertext) of the private key under the configured
    -- key-encryption key; the plaintext never touches the database.
    private_key_encrypted bytea NOT NULL,
    public_jwk            jsonb NOT NULL,
    state                 text NOT NULL CHECK (state IN ('next', 'current', 'previous', 'retired')),
    created_at            timestamptz NOT NULL DEFAULT now(),
    activated_at          timestamptz,
    retired_at            timestamptz
);
-- At most one key signs at a time.
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (state) WHERE state = 'current';
CREATE INDEX signing_keys_published_idx ON signing_keys (state) WHERE state <> 'retired';

-- ---------------------------------------------------------------- service clients
-- Machine clients (introspection, admin automation). Secret stored as argon2id PHC.
CREATE TABLE service_clients (
    id            uuid PRIMARY KEY,
    client_id     text NOT NULL UNIQUE CHECK (client_id ~ '^[A-Za-z0-9_.-]{3,64}$'),
    -- NULL: platform-wide client; otherwise limited to one tenant.
    tenant_id     uuid REFERENCES tenants (id) ON DELETE CASCADE,
    secret_hash   text NOT NULL CHECK (secret_hash LIKE '$argon2id$%'),
    description   text NOT NULL DEFAULT '',
    scopes        text[] NOT NULL DEFAULT '{introspect}',
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz
);

-- ---------------------------------------------------------------- routing
CREATE TABLE services (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$'),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE service_versions (
    id          uuid PRIMARY KEY,
    service_id  uuid NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    version     text NOT NULL CHECK (version ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$'),
    -- The version tenants get when no rollout names one.
    is_default  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (service_id, version),
    UNIQUE (service_id, id)
);
CREATE UNIQUE INDEX service_versions_one_default ON service_versions (service_id) WHERE is_default;

-- Instances are configuration; their live health, load counters and breaker state
-- live in Redis (gh:{svc:<name>}:...), written by heartbeats and the proxy.
CREATE TABLE service_instances (
    id          uuid PRIMARY KEY,
    service_id  uuid NOT NULL,
    version_id  uuid NOT NULL,
    -- host:port (or [v6]:port) the gateway proxies to.
    address     text NOT NULL CHECK (length(address) BETWEEN 3 AND 262),
    weight      integer NOT NULL DEFAULT 100 CHECK (weight BETWEEN 0 AND 10000),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'draining', 'deregistered')),
    registered_at timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (service_id, version_id) REFERENCES service_versions (service_id, id) ON DELETE CASCADE,
    UNIQUE (version_id, address)
);
CREATE INDEX service_instances_lookup_idx ON service_instances (service_id, version_id) WHERE status = 'active';

-- Which version of a service a tenant gets: pinned, or a percentage canary from
-- a stable version to a candidate. Rollback keeps history in `previous`.
CREATE TABLE tenant_rollouts (
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    service_id         uuid NOT NULL,
    stable_version_id  uuid NOT NULL,
    canary_version_id  uuid,
    -- Share of the tenant's traffic (0..=100) sent to the canary.
    canary_percent     smallint NOT NULL DEFAULT 0 CHECK (canary_percent BETWEEN 0 AND 100),
    -- Sticky by subject so one user does not flip between versions.
    sticky             boolean NOT NULL DEFAULT true,
    previous           jsonb,
    revision           integer NOT NULL DEFAULT 1 CHECK (revision > 0),
    updated_by         uuid,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, service_id),
    FOREIGN KEY (service_id, stable_version_id) REFERENCES service_versions (service_id, id),
    FOREIGN KEY (service_id, canary_version_id) REFERENCES service_versions (service_id, id),
    CHECK (canary_version_id IS NOT NULL OR canary_percent = 0),
    CHECK (canary_version_id IS NULL OR canary_version_id <> stable_version_id)
);

-- ---------------------------------------------------------------- audit and outbox
-- Append-only record of security-relevant events. UPDATE and DELETE are refused.
CREATE TABLE audit_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    tenant_id   uuid,
    actor_id    uuid,
    actor_kind  text NOT NULL CHECK (actor_kind IN ('user', 'service_client', 'system', 'anonymous')),
    action      text NOT NULL CHECK (length(action) BETWEEN 1 AND 64),
    target      text,
    outcome     text NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    ip          inet,
    user_agent  text,
    request_id  text,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_tenant_time_idx ON audit_events (tenant_id, occurred_at DESC);
CREATE INDEX audit_events_action_idx ON audit_events (action, occurred_at DESC);

CREATE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only'
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_events_no_update
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

-- Transactional outbox: a change commits together with the event describing it; the
-- relay publishes unpublished rows to the Redis event stream in id order.
CREATE TABLE outbox_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid,
    -- Typed, versioned envelope: kind + schema_version + payload.
    kind         text NOT NULL CHECK (length(kind) BETWEEN 1 AND 64),
    schema_version smallint NOT NULL DEFAULT 1,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox_events (id) WHERE published_at IS NULL;
