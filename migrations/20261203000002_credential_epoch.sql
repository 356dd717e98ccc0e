-- A per-user credential epoch: bumped whenever the user's credentials are changed on
-- purpose (a password change or reset, which sets password_changed_at) or the user is
-- disabled. Known-device proofs carry the epoch they were issued in, so a password
-- change or a disable retires every device proof of the user (issue 11). A trigger, so
-- every writer (API, CLI, SQL by hand) bumps it; a login rehash (same password, new
-- parameters) leaves password_changed_at alone and so the epoch too.
ALTER TABLE users ADD COLUMN credential_epoch bigint NOT NULL DEFAULT 0;

CREATE FUNCTION users_bump_credential_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.password_changed_at IS DISTINCT FROM OLD.password_changed_at
       OR (NEW.status = 'disabled' AND OLD.status IS DISTINCT FROM 'disabled') THEN
        NEW.credential_epoch := OLD.credential_epoch + 1;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER users_credential_epoch BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION users_bump_credential_epoch();
