//! The canary controller: ramps rollouts on their schedule and rolls a canary
//! back by itself when its analysis finds it doing worse than the stable
//! version (`gatehouse_routing::canary`).
//!
//! Every gateway runs it, once per tick: leader-free, because each change is
//! conditional on the rollout's revision as read ([`transition_rollout`]), so
//! when two gateways judge the same rollout only one change lands; the other
//! finds the revision moved and does nothing. Each change is audited in the
//! same transaction (actor: system) and reaches every gateway like any other
//! rollout change: its trigger's `routing.changed` event re-mirrors the
//! service. A ramp with an analysis advances only once the canary has seen
//! the analysis's minimum traffic in the window and is within its margins; a
//! ramp without one advances on the clock alone. Each tenant's canary is
//! judged on that tenant's traffic alone (`RoutingStore::version_stats`).
//!
//! [`transition_rollout`]: gatehouse_store::routing::transition_rollout

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_routing::{Analysis, Verdict, VersionStats, judge};
use gatehouse_store::routing::{self as config, Transition, WatchedRollout};
use sqlx::PgPool;

use crate::routing::Routing;

/// Ramps and judges canaries (see the module doc).
pub struct CanaryController {
    db: PgPool,
    routing: Arc<Routing>,
    tick: Duration,
}

/// Statistics read in one tick, by service, tenant and window (`None`: Redis
/// did not answer).
type StatsByRollout = HashMap<(String, String, u32), Option<HashMap<String, VersionStats>>>;

/// What one tick did to one rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing due, or waiting for traffic.
    None,
    /// Moved to the next ramp step (buckets).
    Stepped(i32),
    /// Reached 100%.
    Completed,
    /// Rolled back, with the analysis's finding.
    RolledBack(String),
}

impl CanaryController {
    /// A controller over `db` (rollouts) and `routing` (statistics).
    #[must_use]
    pub fn new(db: PgPool, routing: Arc<Routing>, tick: Duration) -> Self {
        Self { db, routing, tick }
    }

    /// Runs [`CanaryController::tick`] every `tick` until the handle drops.
    #[must_use]
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(self.tick).await;
                if let Err(e) = self.tick().await {
                    tracing::warn!(error = %e, "canary controller tick failed; retrying");
                }
            }
        })
    }

    /// Looks at every watched rollout once; returns what it did to each.
    pub async fn tick(&self) -> Result<Vec<(WatchedRollout, Action)>, gatehouse_store::StoreError> {
        let rollouts = config::watched_rollouts(&self.db).await?;
        let mut stats: StatsByRollout = HashMap::new();
        let mut done = Vec::with_capacity(rollouts.len());
        for rollout in rollouts {
            let analysis = match rollout
                .analysis
                .clone()
                .map(serde_json::from_value::<Analysis>)
            {
                None => None,
                Some(Ok(analysis)) => Some(analysis),
                Some(Err(e)) => {
                    tracing::error!(service = %rollout.service, tenant = %rollout.tenant_id, error = %e, "unreadable canary analysis; skipping the rollout");
                    continue;
                }
            };
            let verdict = match &analysis {
                None => None,
                Some(analysis) => {
                    // The tenant's own traffic only: another tenant's users
                    // cannot move this verdict.
                    let tenant = rollout.tenant_id.to_string();
                    let key = (rollout.service.clone(), tenant, analysis.window_s);
                    if !stats.contains_key(&key) {
                        let read = self
                            .routing
                            .store()
                            .version_stats(
                                &rollout.service,
                                &key.1,
                                Duration::from_secs(u64::from(analysis.window_s)),
                                self.routing.now_ms(),
                            )
                            .await;
                        if let Err(e) = &read {
                            tracing::warn!(service = %rollout.service, error = %e, "canary statistics unavailable; the rollout waits");
                        }
                        stats.insert(key.clone(), read.ok());
                    }
                    let Some(Some(by_version)) = stats.get(&key) else {
                        continue;
                    };
                    let empty = VersionStats::default();
                    Some(judge(
                        analysis,
                        by_version.get(&rollout.canary).unwrap_or(&empty),
                        by_version.get(&rollout.stable).unwrap_or(&empty),
                    ))
                }
            };
            let action = self.act(&rollout, verdict).await?;
            done.push((rollout, action));
        }
        Ok(done)
    }

    async fn act(
        &self,
        rollout: &WatchedRollout,
        verdict: Option<Verdict>,
    ) -> Result<Action, gatehouse_store::StoreError> {
        let (transition, action) = match (&verdict, next_step(rollout)) {
            (Some(Verdict::Failing(reason)), _) => (
                Transition {
                    canary_buckets: 0,
                    state: "rolled_back",
                    reason,
                    next_step_in_s: None,
                    action: "rollout.rolled_back",
                },
                Action::RolledBack(reason.clone()),
            ),
            (Some(Verdict::Waiting { .. }), _) | (_, None) => return Ok(Action::None),
            (_, Some(step)) if step >= i32::from(gatehouse_routing::BUCKETS) => (
                Transition {
                    canary_buckets: step,
                    state: "completed",
                    reason: "the last ramp step: every bucket on the canary",
                    next_step_in_s: None,
                    action: "rollout.completed",
                },
                Action::Completed,
            ),
            (_, Some(step)) => (
                Transition {
                    canary_buckets: step,
                    state: "ramping",
                    reason: "ramp step",
                    next_step_in_s: rollout.ramp_interval_s,
                    action: "rollout.step",
                },
                Action::Stepped(step),
            ),
        };
        if !config::transition_rollout(&self.db, rollout, &transition).await? {
            return Ok(Action::None);
        }
        let label = match &action {
            Action::RolledBack(_) => "rolled_back",
            Action::Completed => "completed",
            Action::Stepped(_) | Action::None => "step",
        };
        metrics::counter!("gatehouse_canary_transitions_total", "action" => label).increment(1);
        match &action {
            Action::RolledBack(reason) => {
                tracing::warn!(service = %rollout.service, tenant = %rollout.tenant_id, canary = %rollout.canary, %reason, "canary rolled back by its analysis");
            }
            other => {
                tracing::info!(service = %rollout.service, tenant = %rollout.tenant_id, canary = %rollout.canary, action = ?other, "canary ramp");
            }
        }
        self.routing.mirror_soon(rollout.service.clone());
        Ok(action)
    }
}

/// The buckets of the next ramp step, when one is due.
fn next_step(rollout: &WatchedRollout) -> Option<i32> {
    if rollout.state != "ramping" || !rollout.step_due {
        return None;
    }
    rollout
        .ramp_steps
        .iter()
        .copied()
        .find(|step| *step > rollout.canary_buckets)
}
