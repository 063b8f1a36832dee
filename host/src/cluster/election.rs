//! Who may campaign, and when (ARCHITECTURE.md, "Elections").
//!
//! openraft 0.9 has no pre-vote, and its voters refuse a vote while the
//! lease of the leader they last heard runs (`election_timeout_max`): left
//! to its random timers, every voter campaigns, the first attempts are
//! refused, terms climb, candidates split the votes, and a cut-off node
//! comes back with a higher term that deposes a healthy leader. So the
//! cluster decides who campaigns, every tick, from what its links say, and
//! openraft's timer runs (`runtime_config().elect`) only where that
//! decision allows:
//!
//! - a node cut off from the majority never campaigns, nor one that has
//!   been in contact for less than a lease (a node that comes back hears
//!   the current leader before it could disturb it);
//! - while a leader is heard (a link with bytes from it within the lease),
//!   nobody campaigns;
//! - once the leader has been silent for the lease and an eighth (so every
//!   voter that heard it has let its lease run out, and grants votes), one
//!   voter
//!   campaigns: the lowest id among the voters this node is in contact
//!   with. Every node in contact computes the same one, so there is no
//!   split vote and the first election wins;
//! - if no leader has come a further two leases later (the chosen one's
//!   log may be behind, so the others refuse it), every voter in contact
//!   campaigns, on openraft's random timers.
//!
//! It also keeps when each member was last heard over its link, which is
//! what a new leader counts a member's silence from (`silence_of`): from
//! when the member went quiet, not from the election.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::replica::Replica;
use super::types::NodeId;

/// What the steering remembers between ticks.
#[derive(Default)]
pub(super) struct Campaigning {
    /// When each member last sent bytes on its link, as seen at a tick.
    heard: HashMap<NodeId, Instant>,
    /// Since when this node has been in contact with a majority.
    in_contact_since: Option<Instant>,
    /// Since when no leader has been heard.
    leaderless_since: Option<Instant>,
    /// What openraft was last told.
    allowed: Option<bool>,
}

/// Records when member `id` was last heard over its link (`silent` ago).
pub(super) fn heard(replica: &Replica, id: NodeId, silent: Duration) {
    let Some(at) = Instant::now().checked_sub(silent) else {
        return;
    };
    let mut state = replica.campaigning();
    let last = state.heard.entry(id).or_insert(at);
    *last = (*last).max(at);
}

/// When member `id` was last heard over a link, if ever since this node
/// started.
pub(super) fn last_heard(replica: &Replica, id: NodeId) -> Option<Instant> {
    replica.campaigning().heard.get(&id).copied()
}

/// Decides, at a tick, whether this node may campaign; `voters` are the
/// current voters, `in_contact` whether it hears a majority of them.
pub(super) fn steer(
    replica: &Replica,
    voters: &[NodeId],
    in_contact: bool,
    leader: Option<NodeId>,
) {
    let now = Instant::now();
    let lease = replica.settings.election_lease();
    let heard_within = |id: NodeId, within: Duration, state: &Campaigning| {
        id == replica.me
            || state
                .heard
                .get(&id)
                .is_some_and(|at| now.saturating_duration_since(*at) < within)
    };
    let mut state = replica.campaigning();
    if !in_contact {
        state.in_contact_since = None;
    } else if state.in_contact_since.is_none() {
        state.in_contact_since = Some(now);
    }
    // An eighth more than the lease: the other voters may have heard the
    // leader a heartbeat later than this node did.
    let leader_heard = leader.is_some_and(|id| heard_within(id, lease + lease / 8, &state));
    if leader_heard {
        state.leaderless_since = None;
    } else if state.leaderless_since.is_none() {
        state.leaderless_since = Some(now);
    }
    let settled = state
        .in_contact_since
        .is_some_and(|since| now.saturating_duration_since(since) >= lease);
    let chosen = voters
        .iter()
        .copied()
        .filter(|id| Some(*id) != leader && heard_within(*id, lease, &state))
        .min();
    let leaderless_for = state
        .leaderless_since
        .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
    let allowed = voters.contains(&replica.me)
        && settled
        && !leader_heard
        && (chosen == Some(replica.me) || leaderless_for >= lease * 2);
    if state.allowed != Some(allowed) {
        state.allowed = Some(allowed);
        drop(state);
        replica.raft.runtime_config().elect(allowed);
        if allowed {
            tracing::info!(node = %replica.name, "no leader heard for {:.1}s: this node campaigns", leaderless_for.as_secs_f64());
        }
    }
}
