//! The rules of a rollout, applied as every node applies the log.

use super::lead::next_step;
use super::*;

const A: NodeId = 1;
const B: NodeId = 2;
const C: NodeId = 3;

fn options() -> RolloutOptions {
    RolloutOptions {
        canary: 100,
        max_failures: 10,
        down: false,
        all_at_once: false,
        commit: false,
    }
}

fn start(options: RolloutOptions, hash: u8) -> RolloutStep {
    RolloutStep::Start {
        component: "todo".into(),
        to: VersionRef {
            hash: [hash; 32],
            label: format!("v{hash}"),
        },
        from_label: "v1".into(),
        issued_on: "a@h".into(),
        bytes: vec![hash; 8],
        options,
        nodes: vec![(A, "a@h".into()), (B, "b@h".into()), (C, "c@h".into())],
    }
}

/// Applies what the leader proposes until it proposes nothing, with `up`
/// saying which nodes are up and `answer` what each asked node reports.
fn lead_until_idle(
    rollouts: &mut Rollouts,
    index: &mut u64,
    up: impl Fn(NodeId) -> bool,
    answer: impl Fn(NodeId) -> Option<Result<String, String>>,
) -> Vec<String> {
    let mut steps = Vec::new();
    for _ in 0..50 {
        let rollout = rollouts.by_component["todo"].clone();
        let id = rollout.id;
        let asked: Vec<NodeId> = rollout
            .nodes
            .iter()
            .filter(|(_, _, step)| *step == NodeStep::Asked)
            .map(|(node, _, _)| *node)
            .collect();
        let step = match next_step(&rollout, &up) {
            Some(step) => step,
            None => match asked.iter().find_map(|node| Some((*node, answer(*node)?))) {
                Some((node, outcome)) => RolloutStep::Report { id, node, outcome },
                None => return steps,
            },
        };
        steps.push(
            format!("{step:?}")
                .split([' ', '{'])
                .next()
                .unwrap_or("")
                .to_string(),
        );
        *index += 1;
        rollouts
            .apply(*index, &step)
            .expect("the leader's step applies");
    }
    panic!("the rollout never settled: {steps:?}");
}

#[test]
fn a_rolling_rollout_asks_one_node_at_a_time_and_finishes() {
    let mut rollouts = Rollouts::default();
    let writes = rollouts.apply(10, &start(options(), 2)).expect("start");
    // The bytes and the record are stored under the host's own keys.
    assert!(
        writes
            .iter()
            .all(|w| matches!(w, Operation::Put(key, _) if key.starts_with(b"\0")))
    );
    let mut index = 10;
    let steps = lead_until_idle(
        &mut rollouts,
        &mut index,
        |_| true,
        |_| Some(Ok("ok".into())),
    );
    assert_eq!(
        steps,
        ["Ask", "Report", "Ask", "Report", "Ask", "Report", "Finish"]
    );
    let rollout = &rollouts.by_component["todo"];
    assert_eq!(rollout.phase, Phase::Swapped);
    let commit = RolloutStep::Commit { id: rollout.id };
    rollouts.apply(20, &commit).expect("commit");
    assert_eq!(rollouts.by_component["todo"].phase, Phase::Committed);
}

#[test]
fn a_node_that_fails_rolls_every_node_back_and_the_next_is_never_asked() {
    let mut rollouts = Rollouts::default();
    rollouts.apply(10, &start(options(), 2)).expect("start");
    let mut index = 10;
    let answer = |node| {
        Some(if node == B {
            Err("dry run refused".into())
        } else {
            Ok("ok".into())
        })
    };
    lead_until_idle(&mut rollouts, &mut index, |_| true, answer);
    let rollout = &rollouts.by_component["todo"];
    assert!(
        matches!(&rollout.phase, Phase::RolledBack(reason) if reason.contains("b@h") && reason.contains("dry run refused"))
    );
    assert_eq!(rollout.step_of(C), Some(&NodeStep::Pending));
}

#[test]
fn a_node_down_at_its_turn_is_deferred_and_reports_when_back() {
    let mut rollouts = Rollouts::default();
    rollouts
        .apply(
            10,
            &start(
                RolloutOptions {
                    commit: true,
                    ..options()
                },
                2,
            ),
        )
        .expect("start");
    let mut index = 10;
    lead_until_idle(
        &mut rollouts,
        &mut index,
        |node| node != B,
        |_| Some(Ok("ok".into())),
    );
    let rollout = rollouts.by_component["todo"].clone();
    assert_eq!(rollout.phase, Phase::Committed);
    assert_eq!(rollout.step_of(B), Some(&NodeStep::Deferred));
    // Back, it swaps and reports, committed or not.
    let report = RolloutStep::Report {
        id: rollout.id,
        node: B,
        outcome: Ok("late".into()),
    };
    rollouts
        .apply(30, &report)
        .expect("a deferred node reports");
    assert_eq!(
        rollouts.by_component["todo"].step_of(B),
        Some(&NodeStep::Swapped("late".into()))
    );
}

#[test]
fn steps_that_do_not_follow_from_the_record_change_nothing() {
    let mut rollouts = Rollouts::default();
    rollouts.apply(10, &start(options(), 2)).expect("start");
    let before = rollouts.clone();
    let refused = [
        start(options(), 3),
        RolloutStep::Commit { id: 10 },
        RolloutStep::Report {
            id: 10,
            node: A,
            outcome: Ok("not asked".into()),
        },
        RolloutStep::Finish { id: 10 },
        RolloutStep::Ask {
            id: 99,
            nodes: vec![A],
        },
        RolloutStep::Promote { id: 10 },
    ];
    for step in refused {
        assert!(rollouts.apply(11, &step).is_err(), "{step:?} was taken");
    }
    assert_eq!(rollouts, before);
    // Rolled back, it is over: another may start, and the bytes of four
    // versions are kept, no more.
    rollouts
        .apply(
            12,
            &RolloutStep::RollBack {
                id: 10,
                reason: "no".into(),
            },
        )
        .expect("rollback");
    for (index, hash) in (13..).zip(3..=6u8) {
        let writes = rollouts
            .apply(index, &start(options(), hash))
            .expect("start");
        let id = rollouts.by_component["todo"].id;
        rollouts
            .apply(
                index + 100,
                &RolloutStep::RollBack {
                    id,
                    reason: "no".into(),
                },
            )
            .expect("rollback");
        let deleted = writes
            .iter()
            .filter(|w| matches!(w, Operation::Delete(_)))
            .count();
        assert_eq!(deleted, usize::from(hash == 6), "after version {hash}");
    }
    assert_eq!(rollouts.by_component["todo"].kept_bytes.len(), BYTES_KEPT);
}

#[test]
fn an_all_at_once_canary_asks_every_node_and_waits_for_promote_and_commit() {
    let mut rollouts = Rollouts::default();
    let canary = RolloutOptions {
        canary: 20,
        all_at_once: true,
        commit: true,
        ..options()
    };
    rollouts.apply(10, &start(canary, 2)).expect("start");
    assert!(
        rollouts.by_component["todo"]
            .nodes
            .iter()
            .all(|(_, _, s)| *s == NodeStep::Asked)
    );
    let mut index = 10;
    lead_until_idle(
        &mut rollouts,
        &mut index,
        |_| true,
        |_| Some(Ok("ok".into())),
    );
    // A canary is not committed by itself.
    assert_eq!(rollouts.by_component["todo"].phase, Phase::Swapped);
    assert!(rollouts.apply(40, &RolloutStep::Commit { id: 10 }).is_err());
    rollouts
        .apply(41, &RolloutStep::Promote { id: 10 })
        .expect("promote");
    rollouts
        .apply(42, &RolloutStep::Commit { id: 10 })
        .expect("commit");
    assert_eq!(rollouts.by_component["todo"].phase, Phase::Committed);
    // The record reads back as it was written.
    let record = postcard::to_allocvec(&rollouts.by_component["todo"]).expect("encode");
    assert_eq!(Rollouts::from_records([record]).expect("decode"), rollouts);
}
