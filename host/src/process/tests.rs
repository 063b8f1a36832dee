//! The process runtime's life cycle, with plain-Rust code behind [`Code`]:
//! no engine, no storage, no node. What a wasm guest would do, the script
//! below does on cue (`b"panic"`, `b"trap"`, ...).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::*;
use crate::config::{ProcessLimits, RestartIntensity};

/// What every instance of the test code shares: cues and counts.
#[derive(Default)]
struct Script {
    /// Notified when a call to `wait then panic` has started.
    entered: Notify,
    /// Notified by the test to let that call go on (and panic).
    gate: Notify,
    inits: AtomicUsize,
    take_overs: AtomicUsize,
    /// Calls running right now, and the most ever at once.
    running: AtomicUsize,
    most_at_once: AtomicUsize,
    /// Casts in the order they were handled.
    casts: Mutex<Vec<Vec<u8>>>,
    hand_over_fails: AtomicBool,
    /// Names whose states the next version refuses to take over.
    refused_by_next: Mutex<Vec<String>>,
    /// Whether a version can hand its state down to an older one.
    cannot_hand_down: AtomicBool,
}

/// A counter: `init` starts it at 0, every call adds one and answers the
/// count (version 1) or `COUNT@VERSION` (any other), `hand-over` hands the
/// count over.
struct Counter {
    script: Arc<Script>,
    version: Arc<str>,
    /// False for a component that only serves HTTP.
    runs: bool,
    stats: VersionStats,
}

struct CounterInstance {
    count: u64,
    script: Arc<Script>,
    version: Arc<str>,
    /// Set by `b"interrupt"`.
    interrupted: Option<String>,
}

impl Code for Counter {
    type Instance = CounterInstance;

    fn version(&self) -> &Arc<str> {
        &self.version
    }

    fn stats(&self) -> &VersionStats {
        &self.stats
    }

    fn generation(&self) -> i64 {
        self.version.parse().unwrap_or(0)
    }

    fn runs_processes(&self) -> bool {
        self.runs
    }

    async fn start(
        &self,
        who: Who<'_>,
        start: &Start,
        _deadline: Duration,
    ) -> Result<CounterInstance, String> {
        if let Start::TakeOverFrom { .. } = start {
            let refused = self.script.refused_by_next.lock().expect("refused");
            if refused.iter().any(|name| **name == *who.key.name) {
                return Err("this state is not one version 2 reads".into());
            }
        }
        let count = match start.state() {
            None => {
                self.script.inits.fetch_add(1, Ordering::SeqCst);
                0
            }
            Some(state) => {
                self.script.take_overs.fetch_add(1, Ordering::SeqCst);
                let bytes: [u8; 8] = state.try_into().map_err(|_| "bad state")?;
                u64::from_le_bytes(bytes)
            }
        };
        Ok(CounterInstance {
            count,
            script: self.script.clone(),
            version: self.version.clone(),
            interrupted: None,
        })
    }
}

impl Instance for CounterInstance {
    fn interrupted(&self) -> Option<String> {
        self.interrupted.clone()
    }

    async fn handle_call(
        &mut self,
        message: &[u8],
        _deadline: Duration,
    ) -> Result<Vec<u8>, String> {
        let script = &self.script;
        let now = script.running.fetch_add(1, Ordering::SeqCst) + 1;
        script.most_at_once.fetch_max(now, Ordering::SeqCst);
        let answer = match message {
            b"panic" => panic!("injected by a test"),
            b"wait then panic" => {
                script.entered.notify_one();
                script.gate.notified().await;
                panic!("injected after a wait")
            }
            b"trap" => Err("trapped: injected by a test".to_string()),
            b"interrupt" => {
                // As the storage capability does when a write's outcome is
                // unknown: the guest traps, the instance says why.
                self.interrupted = Some("storage write of unknown outcome: injected".into());
                Err("trapped: after a write of unknown outcome".to_string())
            }
            _ => {
                tokio::task::yield_now().await;
                self.count += 1;
                if &*self.version == "1" {
                    Ok(self.count.to_string().into_bytes())
                } else {
                    Ok(format!("{}@{}", self.count, self.version).into_bytes())
                }
            }
        };
        script.running.fetch_sub(1, Ordering::SeqCst);
        answer
    }

    async fn handle_cast(&mut self, message: &[u8], _deadline: Duration) -> Result<(), String> {
        self.count += 1;
        self.script
            .casts
            .lock()
            .expect("casts")
            .push(message.to_vec());
        Ok(())
    }

    async fn hand_over(&mut self, _deadline: Duration) -> Result<Vec<u8>, String> {
        if self.script.hand_over_fails.load(Ordering::SeqCst) {
            return Err("trapped: hand-over injected to fail".into());
        }
        Ok(self.count.to_le_bytes().to_vec())
    }

    async fn hand_over_to(
        &mut self,
        _version: &str,
        _deadline: Duration,
    ) -> Result<Result<Vec<u8>, String>, String> {
        if self.script.cannot_hand_down.load(Ordering::SeqCst) {
            return Ok(Err("cannot hand down".into()));
        }
        Ok(Ok(self.count.to_le_bytes().to_vec()))
    }

    async fn render_state(
        &mut self,
        _deadline: Duration,
    ) -> Result<Result<String, String>, String> {
        Ok(Ok(format!("count {}", self.count)))
    }
}

/// Processes that hibernate after `idle` and expire after a minute.
fn hibernating_after(idle: Duration) -> (Arc<Processes<Counter>>, Arc<Script>) {
    let limits = ProcessLimits {
        hibernate_after: Some(idle),
        idle_timeout: Duration::from_secs(60),
        ..ProcessLimits::default()
    };
    processes(limits, 16, RestartIntensity::default())
}

/// Version `version` of the counter.
fn counter(script: &Arc<Script>, version: &str) -> Arc<Counter> {
    Arc::new(Counter {
        script: script.clone(),
        version: Arc::from(version),
        runs: true,
        stats: VersionStats::default(),
    })
}

/// States past the budget, in a map.
#[derive(Default)]
struct MapSpill(Mutex<HashMap<Pid, Vec<u8>>>);

impl StateSpill for MapSpill {
    fn keep(&self, pid: Pid, state: &[u8]) -> Result<(), String> {
        self.0.lock().expect("spill").insert(pid, state.to_vec());
        Ok(())
    }
    fn take(&self, pid: Pid) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.lock().expect("spill").remove(&pid))
    }
    fn peek(&self, pid: Pid) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.lock().expect("spill").get(&pid).cloned())
    }
    fn forget(&self, pid: Pid) -> Result<(), String> {
        self.0.lock().expect("spill").remove(&pid);
        Ok(())
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

fn limits() -> ProcessLimits {
    ProcessLimits {
        hibernate_after: None,
        ..ProcessLimits::default()
    }
}

/// Processes of one component, `counter`, with `limits` and `permits`.
fn processes(
    limits: ProcessLimits,
    permits: u32,
    restarts: RestartIntensity,
) -> (Arc<Processes<Counter>>, Arc<Script>) {
    let script = Arc::new(Script::default());
    let code = counter(&script, "1");
    let front = Arc::new(Counter {
        script: script.clone(),
        version: Arc::from("1"),
        runs: false,
        stats: VersionStats::default(),
    });
    let targets = Arc::new(Targets::new([
        (Arc::from("counter"), code),
        (Arc::from("front"), front),
    ]));
    let settings = ProcessSettings {
        limits,
        restarts,
        instance_permits: permits,
    };
    let processes =
        Processes::start(settings, targets, Arc::new(MapSpill::default())).expect("start");
    (processes, script)
}

fn default_processes() -> (Arc<Processes<Counter>>, Arc<Script>) {
    processes(limits(), 16, RestartIntensity::default())
}

async fn call(
    processes: &Arc<Processes<Counter>>,
    name: &str,
    message: &[u8],
) -> Result<String, CallError> {
    let reply = processes
        .call("counter", name, message.to_vec(), TIMEOUT)
        .await?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// Waits (bounded) until `done` holds: for what happens in the processes'
/// own tasks.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 5 s");
}

fn is_host_bug(answer: &Result<String, CallError>) -> bool {
    matches!(answer, Err(CallError::Crashed(reason)) if reason.contains("host bug"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_panic_crashes_the_process_and_its_next_call_starts_it_afresh() {
    let (processes, script) = default_processes();
    // In the process's own task: its first message starts it.
    let first = call(&processes, "p", b"panic").await;
    assert!(is_host_bug(&first), "{first:?}");
    // Its caller is answered once the name is free: the next call meets a
    // fresh process, every time.
    assert_eq!(call(&processes, "p", b"").await, Ok("1".into()));
    assert_eq!(call(&processes, "p", b"").await, Ok("2".into()));
    // In the caller's task (the process rests), or its own: the same.
    let direct = call(&processes, "p", b"panic").await;
    assert!(is_host_bug(&direct), "{direct:?}");
    assert_eq!(call(&processes, "p", b"").await, Ok("1".into()));
    assert_eq!(script.inits.load(Ordering::SeqCst), 3);
    assert_eq!(processes.counters().values().crashed, 2);
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_queued_behind_a_host_panic_are_refused_with_the_reason() {
    let (processes, script) = default_processes();
    assert_eq!(call(&processes, "p", b"").await, Ok("1".into()));
    let panicking = tokio::spawn({
        let processes = processes.clone();
        async move { call(&processes, "p", b"wait then panic").await }
    });
    script.entered.notified().await;
    // The process is busy: this call waits in its mailbox.
    let queued = tokio::spawn({
        let processes = processes.clone();
        async move { call(&processes, "p", b"").await }
    });
    eventually("the second call is queued", || {
        processes
            .snapshot()
            .iter()
            .any(|info| info.queued_messages == 1)
    })
    .await;
    script.gate.notify_one();
    let crashed = panicking.await.expect("caller");
    assert!(is_host_bug(&crashed), "{crashed:?}");
    let refused = queued.await.expect("caller");
    assert!(
        matches!(&refused, Err(CallError::Refused(reason)) if reason.contains("host bug")),
        "{refused:?}"
    );
    assert_eq!(call(&processes, "p", b"").await, Ok("1".into()));
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_at_a_time_and_casts_in_the_order_sent() {
    let (processes, script) = default_processes();
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let processes = processes.clone();
            tokio::spawn(async move { call(&processes, "p", b"").await })
        })
        .collect();
    let mut answers = Vec::new();
    for caller in callers {
        let answer = caller.await.expect("caller").expect("answer");
        answers.push(answer.parse::<u64>().expect("a count"));
    }
    answers.sort_unstable();
    assert_eq!(answers, (1..=32).collect::<Vec<u64>>(), "each call once");
    assert_eq!(script.most_at_once.load(Ordering::SeqCst), 1);

    for i in 0..100u8 {
        processes
            .cast("counter", "p", vec![i])
            .expect("cast accepted");
    }
    eventually("every cast is handled", || {
        script.casts.lock().expect("casts").len() == 100
    })
    .await;
    let casts = script.casts.lock().expect("casts").clone();
    assert_eq!(casts, (0..100u8).map(|i| vec![i]).collect::<Vec<_>>());
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_process_hibernates_and_wakes_with_its_state() {
    let (processes, script) = hibernating_after(Duration::from_millis(50));
    assert_eq!(call(&processes, "p", b"").await, Ok("1".into()));
    assert_eq!(call(&processes, "p", b"").await, Ok("2".into()));
    eventually("it hibernates", || {
        processes.counters().values().hibernated == 1 && processes.permits().held() == 0
    })
    .await;
    assert_eq!(processes.len(), 1, "hibernated, still alive");
    assert_eq!(call(&processes, "p", b"").await, Ok("3".into()));
    assert_eq!(processes.counters().values().woken, 1);
    assert_eq!(script.take_overs.load(Ordering::SeqCst), 1);
    assert_eq!(script.inits.load(Ordering::SeqCst), 1);
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_process_expires_and_its_next_message_starts_it_again() {
    let idle = ProcessLimits {
        hibernate_after: None,
        idle_timeout: Duration::from_millis(50),
        ..ProcessLimits::default()
    };
    let (processes, script) = processes(idle, 16, RestartIntensity::default());
    assert_eq!(call(&processes, "p", b"").await, Ok("1".into()));
    eventually("it expires", || processes.counters().values().expired == 1).await;
    assert_eq!(processes.len(), 0);
    assert_eq!(call(&processes, "p", b"").await, Ok("1".into()));
    assert_eq!(script.inits.load(Ordering::SeqCst), 2);
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_processes_than_permits_take_turns_keeping_their_state() {
    let (processes, _script) = processes(limits(), 2, RestartIntensity::default());
    for round in 1..=3 {
        for name in ["a", "b", "c", "d", "e"] {
            assert_eq!(
                call(&processes, name, b"").await,
                Ok(round.to_string()),
                "{name} in round {round}"
            );
        }
    }
    assert!(processes.permits().held() <= 2);
    assert!(processes.counters().values().hibernated >= 3);
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_hand_over_expires_the_process_and_loses_nothing_sent() {
    let (processes, script) = processes(limits(), 1, RestartIntensity::default());
    assert_eq!(call(&processes, "a", b"").await, Ok("1".into()));
    script.hand_over_fails.store(true, Ordering::SeqCst);
    // `b` needs the only permit: `a` is asked to hibernate, fails, expires.
    assert_eq!(call(&processes, "b", b"").await, Ok("1".into()));
    assert_eq!(processes.counters().values().hand_overs_failed, 1);
    script.hand_over_fails.store(false, Ordering::SeqCst);
    assert_eq!(
        call(&processes, "a", b"").await,
        Ok("1".into()),
        "from init"
    );
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_past_the_restart_intensity_refuse_the_name_for_a_while() {
    let intensity = RestartIntensity {
        max_restarts: 1,
        period: Duration::from_secs(60),
        cooldown: Duration::from_secs(60),
    };
    let (processes, _script) = processes(limits(), 16, intensity);
    for _ in 0..2 {
        let crashed = call(&processes, "p", b"trap").await;
        assert!(matches!(crashed, Err(CallError::Crashed(_))), "{crashed:?}");
    }
    let refused = call(&processes, "p", b"").await;
    assert!(
        matches!(&refused, Err(CallError::Refused(reason)) if reason.contains("refused for")),
        "{refused:?}"
    );
    assert_eq!(
        call(&processes, "q", b"").await,
        Ok("1".into()),
        "others run"
    );
    assert!(
        processes
            .supervisor()
            .restarts_of(&ProcessKey::new("counter", "p"))
            .is_some()
    );
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_of_unknown_outcome_interrupts_the_process_and_is_no_crash() {
    let intensity = RestartIntensity {
        max_restarts: 1,
        period: Duration::from_secs(60),
        cooldown: Duration::from_secs(60),
    };
    let (processes, script) = processes(limits(), 16, intensity);
    let outcome_unknown = |answer: &Result<String, CallError>| matches!(answer, Err(CallError::Crashed(reason)) if reason.starts_with("outcome unknown: "));
    // In its own task (its first message starts it)...
    let answer = call(&processes, "p", b"interrupt").await;
    assert!(outcome_unknown(&answer), "{answer:?}");
    // ...and in the caller's (it rests between messages): three in all,
    // past the intensity had they been crashes.
    for _ in 0..2 {
        assert_eq!(call(&processes, "p", b"").await, Ok("1".into()));
        let answer = call(&processes, "p", b"interrupt").await;
        assert!(outcome_unknown(&answer), "{answer:?}");
    }
    // Never refused for a cooldown: each next message starts it afresh.
    assert_eq!(call(&processes, "p", b"").await, Ok("1".into()));
    assert_eq!(script.inits.load(Ordering::SeqCst), 4);
    let counted = processes.counters().values();
    assert_eq!((counted.interrupted, counted.crashed), (3, 0));
    assert!(
        processes
            .supervisor()
            .restarts_of(&ProcessKey::new("counter", "p"))
            .is_none()
    );
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_components_are_checked_before_anything_starts() {
    let (processes, _script) = default_processes();
    let answer = processes.call("nobody", "p", Vec::new(), TIMEOUT).await;
    assert_eq!(answer, Err(CallError::NoSuchComponent("nobody".into())));
    let answer = processes.call("front", "p", Vec::new(), TIMEOUT).await;
    assert!(matches!(answer, Err(CallError::Refused(reason)) if reason.contains("behaviour")));
    let long = "x".repeat(2000);
    assert!(matches!(
        call(&processes, &long, b"").await,
        Err(CallError::Refused(_))
    ));
    assert_eq!(processes.len(), 0);
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_lets_every_process_finish_and_refuses_new_ones() {
    let (processes, script) = default_processes();
    for name in ["a", "b", "c"] {
        assert_eq!(call(&processes, name, b"").await, Ok("1".into()));
    }
    processes
        .cast("counter", "a", b"last".to_vec())
        .expect("cast");
    processes.stop_all(TIMEOUT).await;
    assert_eq!(processes.len(), 0);
    assert!(
        script
            .casts
            .lock()
            .expect("casts")
            .contains(&b"last".to_vec()),
        "a message accepted before the stop is handled"
    );
    let refused = call(&processes, "d", b"").await;
    assert!(matches!(refused, Err(CallError::Refused(_))), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_ends_after_its_message_and_counts_as_a_crash() {
    let (processes, _script) = default_processes();
    assert_eq!(call(&processes, "p", b"").await, Ok("1".into()));
    assert!(processes.kill(&ProcessKey::new("counter", "p")));
    eventually("it ends", || processes.is_empty()).await;
    assert_eq!(processes.counters().values().crashed, 1);
    assert_eq!(call(&processes, "p", b"").await, Ok("1".into()));
    assert!(!processes.kill(&ProcessKey::new("counter", "nobody")));
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resting_process_renders_its_state_without_being_started() {
    let (processes, _script) = default_processes();
    let key = ProcessKey::new("counter", "p");
    assert!(
        processes.render_state(&key, "test").await.is_err(),
        "none runs"
    );
    assert_eq!(processes.len(), 0, "and none was started");
    assert_eq!(call(&processes, "p", b"").await, Ok("1".into()));
    assert_eq!(
        processes.render_state(&key, "test").await,
        Ok("count 1".into())
    );
    processes.stop_all(TIMEOUT).await;
}

/// Starts a swap of `counter` to `next`, for `share` percent of names.
fn swap_to(
    processes: &Arc<Processes<Counter>>,
    next: Arc<Counter>,
    share: u8,
) -> Arc<SwapProgress> {
    let (_, target) = processes.targets().get("counter").expect("a target");
    let current = target.load().current.clone();
    let progress = Arc::new(SwapProgress::default());
    processes.targets().set(
        "counter",
        Target {
            current,
            next: Some(Next {
                code: next,
                share,
                progress: progress.clone(),
            }),
            leaving: None,
        },
    );
    progress
}

/// Rolls the swap to `leaving` back to `current`.
fn roll_back(
    processes: &Arc<Processes<Counter>>,
    current: Arc<Counter>,
    leaving: Arc<Counter>,
) -> Arc<SwapProgress> {
    let progress = Arc::new(SwapProgress::default());
    processes.targets().set(
        "counter",
        Target {
            current,
            next: None,
            leaving: Some(Next {
                code: leaving,
                share: 100,
                progress: progress.clone(),
            }),
        },
    );
    progress
}

fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_processes_move_to_the_new_code_keeping_their_state() {
    let (processes, script) = default_processes();
    for name in ["a", "b", "c"] {
        call(&processes, name, b"").await.expect("a call");
        assert_eq!(call(&processes, name, b"").await, Ok("2".into()));
    }
    let progress = swap_to(&processes, counter(&script, "2"), 100);
    // The sweep moves the parked ones; one still finishing its reply moves
    // by itself at its message boundary: either way, all three.
    processes.converge("counter", 2, 10).await;
    assert_eq!(load(&progress.moved), 3);
    assert_eq!(
        processes.versions_running("counter"),
        HashMap::from([(Arc::from("2"), 3)])
    );
    for name in ["a", "b", "c"] {
        assert_eq!(
            call(&processes, name, b"").await,
            Ok("3@2".into()),
            "{name}"
        );
    }
    assert_eq!(
        call(&processes, "new", b"").await,
        Ok("1@2".into()),
        "new ones too"
    );
    assert!(progress.pauses().is_some());
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_processes_move_are_handled_once_in_order() {
    let (processes, script) = default_processes();
    assert_eq!(call(&processes, "p", b"").await, Ok("1".into()));
    let progress = swap_to(&processes, counter(&script, "2"), 100);
    let sweep = tokio::spawn({
        let processes = processes.clone();
        async move { processes.converge("counter", 1, 10).await }
    });
    for i in 0..200u8 {
        processes
            .cast("counter", "p", vec![i])
            .expect("cast accepted");
    }
    sweep.await.expect("the sweep");
    eventually("every cast is handled", || {
        script.casts.lock().expect("casts").len() == 200
    })
    .await;
    let casts = script.casts.lock().expect("casts").clone();
    assert_eq!(casts, (0..200u8).map(|i| vec![i]).collect::<Vec<_>>());
    // 1 call and 200 casts, counted across the move.
    assert_eq!(call(&processes, "p", b"").await, Ok("202@2".into()));
    assert_eq!(load(&progress.moved), 1);
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hibernated_process_wakes_into_the_new_code_with_its_state() {
    let (processes, script) = hibernating_after(Duration::from_millis(30));
    call(&processes, "p", b"").await.expect("a call");
    assert_eq!(call(&processes, "p", b"").await, Ok("2".into()));
    eventually("it hibernates", || processes.permits().held() == 0).await;
    let progress = swap_to(&processes, counter(&script, "2"), 100);
    assert_eq!(processes.converge("counter", 4, 1).await, 0, "not woken");
    let take_overs = script.take_overs.load(Ordering::SeqCst);
    assert_eq!(call(&processes, "p", b"").await, Ok("3@2".into()));
    assert_eq!(load(&progress.moved), 1);
    assert_eq!(
        script.take_overs.load(Ordering::SeqCst),
        take_overs + 1,
        "straight into the new code: one take-over, not a wake and a move"
    );
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_failed_to_move_is_tried_again_by_the_next_swap() {
    let (processes, script) = default_processes();
    call(&processes, "p", b"").await.expect("a call");
    script
        .refused_by_next
        .lock()
        .expect("refused")
        .push("p".into());
    let two = counter(&script, "2");
    let first = swap_to(&processes, two.clone(), 100);
    processes.converge("counter", 2, 10).await;
    assert_eq!(load(&first.failed), 1);
    assert_eq!(
        call(&processes, "p", b"").await,
        Ok("2".into()),
        "stays on 1"
    );
    // The same code, asked again by another swap: tried again (and this
    // time it takes the state).
    script.refused_by_next.lock().expect("refused").clear();
    let second = swap_to(&processes, two, 100);
    processes.converge("counter", 2, 10).await;
    assert_eq!((load(&second.moved), load(&second.failed)), (1, 0));
    assert_eq!(call(&processes, "p", b"").await, Ok("3@2".into()));
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hibernated_process_the_new_code_refuses_wakes_on_its_own() {
    let (processes, script) = hibernating_after(Duration::from_millis(30));
    call(&processes, "p", b"").await.expect("a call");
    eventually("it hibernates", || processes.permits().held() == 0).await;
    script
        .refused_by_next
        .lock()
        .expect("refused")
        .push("p".into());
    let progress = swap_to(&processes, counter(&script, "2"), 100);
    assert_eq!(call(&processes, "p", b"").await, Ok("2".into()), "on 1");
    assert_eq!(
        call(&processes, "p", b"").await,
        Ok("3".into()),
        "not retried"
    );
    assert_eq!((load(&progress.moved), load(&progress.failed)), (0, 1));
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_whose_state_the_new_code_refuses_stays_on_its_code() {
    let (processes, script) = default_processes();
    for name in ["a", "b"] {
        assert_eq!(call(&processes, name, b"").await, Ok("1".into()));
    }
    script
        .refused_by_next
        .lock()
        .expect("refused")
        .push("b".into());
    let progress = swap_to(&processes, counter(&script, "2"), 100);
    processes.converge("counter", 2, 10).await;
    assert_eq!((load(&progress.moved), load(&progress.failed)), (1, 1));
    assert!(
        progress
            .last_failure
            .lock()
            .expect("failure")
            .as_deref()
            .is_some_and(|failure| failure.contains("counter/b")),
    );
    assert_eq!(call(&processes, "a", b"").await, Ok("2@2".into()));
    assert_eq!(
        call(&processes, "b", b"").await,
        Ok("2".into()),
        "old code, state kept"
    );
    // Not tried again during this swap.
    processes.converge("counter", 2, 10).await;
    assert_eq!(call(&processes, "b", b"").await, Ok("3".into()));
    assert_eq!(load(&progress.failed), 1);
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_hands_states_down_or_restarts_processes_from_storage() {
    let (processes, script) = default_processes();
    let two = counter(&script, "2");
    // Version 1 is the code the processes run: the very same `Arc`.
    let (_, target) = processes.targets().get("counter").expect("a target");
    let one = target.load().current.clone();
    for name in ["a", "b"] {
        assert_eq!(call(&processes, name, b"").await, Ok("1".into()));
    }
    swap_to(&processes, two.clone(), 100);
    processes.converge("counter", 2, 10).await;
    assert_eq!(call(&processes, "a", b"").await, Ok("2@2".into()));

    // Handed down: the count goes on on version 1.
    let back = roll_back(&processes, one.clone(), two.clone());
    processes.converge("counter", 2, 10).await;
    assert_eq!(call(&processes, "a", b"").await, Ok("3".into()));
    assert_eq!((load(&back.moved), load(&back.restarted)), (2, 0));

    // A version that cannot hand its state down: restarted from storage.
    swap_to(&processes, two.clone(), 100);
    processes.converge("counter", 2, 10).await;
    script.cannot_hand_down.store(true, Ordering::SeqCst);
    let back = roll_back(&processes, one, two);
    processes.converge("counter", 2, 10).await;
    assert_eq!(load(&back.restarted), 2);
    assert_eq!(
        call(&processes, "a", b"").await,
        Ok("1".into()),
        "from init"
    );
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_moves_its_share_of_names_only() {
    // More names than permits: some rest hibernated, and move at their wake.
    let (processes, script) = default_processes();
    let names: Vec<String> = (0..40).map(|i| format!("p{i}")).collect();
    for name in &names {
        call(&processes, name, b"").await.expect("a call");
    }
    swap_to(&processes, counter(&script, "2"), 50);
    processes.converge("counter", 4, 10).await;
    let in_canary = names.iter().filter(|name| in_share(name, 50)).count();
    assert!(in_canary > 0 && in_canary < names.len(), "{in_canary}");
    for name in &names {
        let expected = if in_share(name, 50) { "2@2" } else { "2" };
        assert_eq!(
            call(&processes, name, b"").await,
            Ok(expected.into()),
            "{name}"
        );
    }
    let running = processes.versions_running("counter");
    assert_eq!(running.get("2").copied().unwrap_or(0), in_canary);
    processes.stop_all(TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_states_are_sampled_with_the_version_that_wrote_them() {
    let (processes, _script) = hibernating_after(Duration::from_millis(30));
    call(&processes, "asleep", b"").await.expect("a call");
    eventually("it hibernates", || processes.permits().held() == 0).await;
    call(&processes, "awake", b"").await.expect("a call");
    call(&processes, "awake", b"").await.expect("a call");
    let mut samples = processes.sample_states("counter", 10).await;
    samples.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let counts: Vec<(String, u64, String)> = samples
        .into_iter()
        .map(|(key, handed)| {
            let handed = handed.expect("a state");
            let bytes: [u8; 8] = handed.state.as_slice().try_into().expect("8 bytes");
            (
                key.name.to_string(),
                u64::from_le_bytes(bytes),
                handed.version.to_string(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        vec![
            ("asleep".to_string(), 1, "1".to_string()),
            ("awake".to_string(), 2, "1".to_string())
        ]
    );
    processes.stop_all(TIMEOUT).await;
}
