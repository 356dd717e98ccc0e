-- Version status (issue 13): a version's life is active -> draining -> retired.
--
-- * active: routable, and may be made the default or named by a rollout or a
--   subject rule.
-- * draining: still serves whoever a rule already sends to it, but cannot be made
--   the default or newly named by a rollout or subject rule: operators move
--   tenants off it.
-- * retired: serves nobody (its instances leave the mirror). A version cannot be
--   retired while it is the default or any rollout or subject rule names it.
-- The rules live here, in triggers, so the admin API, the CLI and SQL by hand all
-- obey them. A refusal raises restrict_violation (23001) with the reason; the API
-- answers 409 with it.

ALTER TABLE service_versions
    ADD COLUMN status text NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'draining', 'retired'));

CREATE FUNCTION service_versions_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    users integer;
BEGIN
    IF NEW.is_default AND NEW.status <> 'active'
       AND (TG_OP = 'INSERT' OR NOT OLD.is_default OR OLD.status = 'active') THEN
        RAISE EXCEPTION 'version % is %: only an active version can be the default', NEW.version, NEW.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.status = 'retired' AND (TG_OP = 'INSERT' OR OLD.status <> 'retired') THEN
        IF NEW.is_default THEN
            RAISE EXCEPTION 'version % is the default: make another version the default before retiring it', NEW.version
                USING ERRCODE = 'restrict_violation';
        END IF;
        SELECT count(*) INTO users FROM tenant_rollouts
         WHERE stable_version_id = NEW.id OR canary_version_id = NEW.id;
        IF users > 0 THEN
            RAISE EXCEPTION 'version % is named by % tenant rollout(s): move them off it before retiring it', NEW.version, users
                USING ERRCODE = 'restrict_violation';
        END IF;
        SELECT count(*) INTO users FROM service_subject_rules WHERE version_id = NEW.id;
        IF users > 0 THEN
            RAISE EXCEPTION 'version % is named by % subject rule(s): delete them before retiring it', NEW.version, users
                USING ERRCODE = 'restrict_violation';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER service_versions_guard BEFORE INSERT OR UPDATE ON service_versions
    FOR EACH ROW EXECUTE FUNCTION service_versions_guard();

-- A rollout or subject rule may newly name only an active version.
CREATE FUNCTION require_active_version(named uuid) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    label text;
    state text;
BEGIN
    IF named IS NULL THEN
        RETURN;
    END IF;
    SELECT version, status INTO label, state FROM service_versions WHERE id = named;
    IF state <> 'active' THEN
        RAISE EXCEPTION 'version % is %: only an active version can be newly named', label, state
            USING ERRCODE = 'restrict_violation';
    END IF;
END
$$;

CREATE FUNCTION tenant_rollouts_name_active() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    had_stable uuid;
    had_canary uuid;
BEGIN
    -- A version the rollout already names stays allowed: a draining version
    -- keeps its tenants while they are moved off it. (An upsert fires the
    -- INSERT trigger first, so the existing row is looked up, not OLD.)
    IF TG_OP = 'UPDATE' THEN
        had_stable := OLD.stable_version_id;
        had_canary := OLD.canary_version_id;
    ELSE
        SELECT stable_version_id, canary_version_id INTO had_stable, had_canary
          FROM tenant_rollouts WHERE tenant_id = NEW.tenant_id AND service_id = NEW.service_id;
    END IF;
    IF NEW.stable_version_id IS DISTINCT FROM had_stable
       AND NEW.stable_version_id IS DISTINCT FROM had_canary THEN
        PERFORM require_active_version(NEW.stable_version_id);
    END IF;
    IF NEW.canary_version_id IS DISTINCT FROM had_canary
       AND NEW.canary_version_id IS DISTINCT FROM had_stable THEN
        PERFORM require_active_version(NEW.canary_version_id);
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION service_subject_rules_name_active() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.version_id <> OLD.version_id THEN
        PERFORM require_active_version(NEW.version_id);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER tenant_rollouts_name_active BEFORE INSERT OR UPDATE ON tenant_rollouts
    FOR EACH ROW EXECUTE FUNCTION tenant_rollouts_name_active();
CREATE TRIGGER service_subject_rules_name_active BEFORE INSERT OR UPDATE ON service_subject_rules
    FOR EACH ROW EXECUTE FUNCTION service_subject_rules_name_active();
