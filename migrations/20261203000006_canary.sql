-- Automatic canary analysis and ramps (issue 13).
--
-- * `ramp_steps`: canary buckets (of 10 000) of each step, ascending, the last
--   10 000; `ramp_interval_s` between steps; `next_step_at` when the next is due.
-- * `analysis`: how the canary is judged against the stable version (error-rate
--   margin, p99 ratio, window, minimum requests; gatehouse_routing::canary).
-- * `state`: steady (no ramp), ramping, completed (the last step reached),
--   rolled_back (by the analysis or an operator); `state_reason` says why.
-- Every change by the canary controller bumps `revision` (so two gateways acting on
-- the same rollout cannot both act) and is audited in the same transaction.

ALTER TABLE tenant_rollouts
    ADD COLUMN ramp_steps integer[] NOT NULL DEFAULT '{}'
        CHECK (cardinality(ramp_steps) <= 20 AND 0 < ALL (ramp_steps) AND 10000 >= ALL (ramp_steps)),
    ADD COLUMN ramp_interval_s integer CHECK (ramp_interval_s BETWEEN 1 AND 604800),
    ADD COLUMN next_step_at timestamptz,
    ADD COLUMN analysis jsonb CHECK (analysis IS NULL OR jsonb_typeof(analysis) = 'object'),
    ADD COLUMN state text NOT NULL DEFAULT 'steady'
        CHECK (state IN ('steady', 'ramping', 'completed', 'rolled_back')),
    ADD COLUMN state_reason text CHECK (length(state_reason) <= 500),
    ADD CONSTRAINT tenant_rollouts_ramp_named
        CHECK (cardinality(ramp_steps) = 0 OR (ramp_interval_s IS NOT NULL AND canary_version_id IS NOT NULL));

-- The controller's query: rollouts with something to watch.
CREATE INDEX tenant_rollouts_watched_idx ON tenant_rollouts (state)
    WHERE state = 'ramping' OR analysis IS NOT NULL;
