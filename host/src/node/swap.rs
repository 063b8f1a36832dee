//! Hot swap on this node: versions of each component, and the life of a
//! swap (load, check, dry run, target, sweep, watch; promote, rollback,
//! commit). ARCHITECTURE.md, "Hot swap", is the design; the moves
//! themselves are the process runtime's (`crate::process`, at message
//! boundaries).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use crate::capabilities::{Grant, GuestCalls};
use crate::process::{
    CallError, Code, Direction, Next, ProcessKey, Processes, Start, SwapProgress, Target,
    VersionFigures, Who,
};
use crate::wasm::{Component, LoadedComponent};

/// Committed versions kept, besides the current one, to swap back to.
pub const KEPT_VERSIONS: usize = 3;

/// Live processes whose states a swap's dry run hands to the new version.
const DRY_RUN_SAMPLES: usize = 16;

/// Processes a sweep moves at once: each holds its old and new state for
/// the moment of its move.
const MOVES_AT_ONCE: usize = 16;

/// Passes a sweep makes over processes busy with a message, which move by
/// themselves after it.
const SWEEP_PASSES: usize = 50;

/// How long `swap --commit` waits for the sweep.
const COMMIT_WAIT: Duration = Duration::from_secs(600);

/// How often a swap's failures are looked at.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Failures (failed moves and crashes on the new version) that never make
/// a swap roll back by themselves, whatever the share.
const MIN_FAILURES_TO_ROLL_BACK: u64 = 3;

/// What an operator asks of a swap.
#[derive(Debug, Clone)]
pub struct SwapOptions {
    /// Where the new version comes from.
    pub source: VersionSource,
    /// Its label, instead of its own.
    pub label: Option<String>,
    /// Percent of names (and of HTTP requests) that move first; 100: all.
    pub canary: u8,
    /// Percent of the processes moved that may fail (a failed move, or a
    /// crash on the new version) before the swap rolls back by itself.
    pub max_failures: u8,
    /// The new version is older than every one this node has: processes
    /// hand their states down to it (a kept version keeps its own place).
    pub down: bool,
    /// Waits for the sweep (every live process it could move: hibernated
    /// ones move at their wake, busy ones at their next message), then
    /// commits; a swap that rolls back meanwhile is an error.
    pub commit: bool,
}

/// Where a new version's bytes come from.
#[derive(Debug, Clone)]
pub enum VersionSource {
    /// A file on this node's machine.
    File(PathBuf),
    /// Bytes given whole (in a cluster: from the log, by hash).
    Bytes { bytes: Arc<[u8]>, origin: String },
}

/// A new version read and checked against a component's current one,
/// before anything changed: what a cluster records to roll it out.
#[derive(Debug, Clone)]
pub struct CheckedVersion {
    pub bytes: Vec<u8>,
    pub hash: [u8; 32],
    pub label: String,
    /// The label of the version it would replace on this node.
    pub from_label: String,
}

/// A component's versions on this node, as a cluster's rollout compares
/// them with what the cluster asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalVersions {
    pub current: [u8; 32],
    pub swap: Option<LocalSwap>,
    /// How the last swap ended.
    pub last: Option<String>,
}

/// A swap in progress on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSwap {
    pub to: [u8; 32],
    pub share: u8,
    /// Its sweep is done: every live process it could move has moved.
    pub swept: bool,
    /// What it did, in one line.
    pub summary: String,
}

/// What starting a swap did.
enum Started {
    /// What it said, and the version it swaps to.
    Swapping(String, Arc<Component>),
    /// The component runs that version already.
    Already(String),
}

/// A component's versions on this node.
#[derive(Default)]
struct Versions {
    /// Committed before the current one, newest first.
    kept: VecDeque<Arc<Component>>,
    swap: Option<Swap>,
    /// How the last swap ended, for `versions`.
    last: Option<String>,
    /// The last rollback's moves back, until the next swap starts.
    rollback: Option<RollBack>,
    /// A swap is being checked (loaded, dry run): no other may start.
    starting: bool,
    /// The oldest and newest generations given so far (the first loaded
    /// version is 0): a new version is newer than all, or with `--down`
    /// older than all.
    oldest: i64,
    newest: i64,
}

/// Processes moving back to the version a swap started from.
struct RollBack {
    to: Arc<Component>,
    progress: Arc<SwapProgress>,
    started: Instant,
    swept: Arc<AtomicBool>,
}

/// A swap in progress.
struct Swap {
    from: Arc<Component>,
    to: Arc<Component>,
    share: u8,
    direction: Direction,
    max_failures: u8,
    progress: Arc<SwapProgress>,
    started: Instant,
    /// Set when the sweep is done.
    swept: Arc<AtomicBool>,
}

/// The versions of every component of a node, and its swaps.
pub(super) struct Swaps {
    processes: Arc<Processes<Component>>,
    cache_dir: PathBuf,
    versions: Mutex<HashMap<Arc<str>, Versions>>,
    /// Itself, for the tasks a swap starts.
    this: Weak<Swaps>,
}

/// A component's versions as `versions` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionsView {
    pub component: String,
    pub current: String,
    pub kept: Vec<String>,
    /// Live processes per version.
    pub running: Vec<(String, usize)>,
    /// While a swap runs: what the processes on its two versions did since
    /// it started.
    pub figures: Vec<(String, VersionFigures)>,
    pub swap: Option<String>,
    /// The last rollback's progress.
    pub rollback: Option<String>,
    pub last: Option<String>,
}

impl Swaps {
    pub fn new(processes: Arc<Processes<Component>>, cache_dir: PathBuf) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            processes,
            cache_dir,
            versions: Mutex::new(HashMap::new()),
            this: this.clone(),
        })
    }

    fn versions(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Versions>> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn target(&self, component: &str) -> Result<(Arc<str>, Arc<Target<Component>>), String> {
        self.processes
            .targets()
            .get(component)
            .map(|(name, target)| (name.clone(), target.load_full()))
            .ok_or_else(|| format!("no component `{component}` is loaded"))
    }

    /// Swaps `component` to the version in `options.path`: every check
    /// first, then the target, then the sweep (and, with `commit`, the
    /// commit once it is done). Says what it did.
    pub async fn swap(&self, component: &str, options: SwapOptions) -> Result<String, String> {
        let commit = options.commit;
        match self.start(component, options).await? {
            Started::Swapping(started, to) if commit => {
                let committed = self.commit_when_swept(component, &to).await?;
                Ok(format!("{started}\n{committed}"))
            }
            Started::Swapping(said, _) | Started::Already(said) => Ok(said),
        }
    }

    /// Commits `component`'s swap once its sweep is done, unless its
    /// failures are past its threshold (then it rolls back) or it ended.
    async fn commit_when_swept(
        &self,
        component: &str,
        to: &Arc<Component>,
    ) -> Result<String, String> {
        let deadline = Instant::now() + COMMIT_WAIT;
        loop {
            let verdict = {
                let versions = self.versions();
                let entry = versions.get(component);
                match entry.and_then(|v| v.swap.as_ref()) {
                    Some(swap) if !Arc::ptr_eq(&swap.to, to) => Some(Err(
                        "another swap took this one's place before it was committed".to_string(),
                    )),
                    Some(swap) if swap.swept.load(Ordering::Acquire) => {
                        Some(too_many_failures(swap).map_or(Ok(()), Err))
                    }
                    Some(_) => None,
                    None => Some(Err(format!(
                        "the swap ended before it could be committed: {}",
                        entry
                            .and_then(|v| v.last.as_deref())
                            .unwrap_or("no reason recorded")
                    ))),
                }
            };
            match verdict {
                Some(Ok(())) => return self.commit_swap(component, Some(to)),
                Some(Err(reason)) => {
                    let _ = self.roll_back(component, &reason, Some(to));
                    return Err(reason);
                }
                None if Instant::now() > deadline => {
                    return Err(format!(
                        "`{component}` is still moving after {COMMIT_WAIT:?}: not committed; \
                         `versions` shows where it is, then commit or roll back"
                    ));
                }
                None => tokio::time::sleep(WATCH_EVERY).await,
            }
        }
    }

    /// Starts the swap: every check first, then the target, then the sweep.
    async fn start(&self, component: &str, options: SwapOptions) -> Result<Started, String> {
        let (name, from) = self.reserve(component)?;
        let _reserved = Reserved {
            swaps: self,
            name: name.clone(),
        };
        let to = self.load(&from, &options).await?;
        if Arc::ptr_eq(&to, &from) {
            return Ok(Started::Already(format!(
                "{name} runs version {} already: nothing to swap",
                from.code().version().label
            )));
        }
        let direction = Direction::between(from.as_ref(), to.as_ref());
        check_exports(&from, &to)?;
        // A move down that fails restarts the process from storage: the dry
        // run (which hands states up) guards moves up only.
        let sampled = match direction {
            Direction::Up => self.dry_run(&name, &to).await?,
            Direction::Down => 0,
        };
        let share = options.canary.clamp(1, 100);
        let progress = Arc::new(SwapProgress::default());
        let swept = Arc::new(AtomicBool::new(false));
        {
            let mut versions = self.versions();
            let entry = versions.entry(name.clone()).or_default();
            self.processes.targets().set(
                &name,
                Target {
                    current: from.clone(),
                    next: Some(Next {
                        code: to.clone(),
                        share,
                        progress: progress.clone(),
                    }),
                    leaving: None,
                },
            );
            entry.rollback = None;
            // Both sides counted from now, alike, for `versions`.
            from.code().stats().start_counting();
            to.code().stats().start_counting();
            entry.swap = Some(Swap {
                from: from.clone(),
                to: to.clone(),
                share,
                direction,
                max_failures: options.max_failures,
                progress,
                started: Instant::now(),
                swept: swept.clone(),
            });
        }
        let (from_label, to_label) = (label(&from), label(&to));
        tracing::info!(component = %name, "swap from version {from_label} to {to_label} started ({share}% of processes)");
        self.sweep(name.clone(), swept);
        self.watch(name.clone(), to.clone());
        let live = self
            .processes
            .versions_running(&name)
            .values()
            .sum::<usize>();
        let checked = match direction {
            Direction::Up => format!("the dry run took over {sampled} states"),
            Direction::Down => "down: each process hands its state down, or restarts from \
                                storage"
                .to_string(),
        };
        let said = format!(
            "swapping {name} from {from_label} to {to_label}{}: {checked}; {live} live processes \
             move (hibernated ones at their wake); `versions` shows the progress",
            if share < 100 {
                format!(" for {share}% of names (a canary: `promote` for the rest)")
            } else {
                String::new()
            }
        );
        Ok(Started::Swapping(said, to))
    }

    /// Reserves `component` for a swap being checked: refused while another
    /// is checked or runs. Returns its name and current version.
    fn reserve(&self, component: &str) -> Result<(Arc<str>, Arc<Component>), String> {
        let mut versions = self.versions();
        let (name, target) = self.target(component)?;
        let entry = versions.entry(name.clone()).or_default();
        if entry.starting || entry.swap.is_some() || target.next.is_some() {
            return Err(format!(
                "`{name}` is being swapped already: promote, rollback or commit that swap first"
            ));
        }
        entry.starting = true;
        Ok((name, target.current.clone()))
    }

    /// The version in `options.path`: one this node has (current or kept),
    /// or a new one loaded; and which way processes move to it.
    async fn load(
        &self,
        from: &Arc<Component>,
        options: &SwapOptions,
    ) -> Result<Arc<Component>, String> {
        let loaded = self
            .load_code(from, &options.source, options.label.clone())
            .await?;
        let hash = loaded.version().hash;
        if from.code().version().hash == hash {
            return Ok(from.clone());
        }
        let mut versions = self.versions();
        let entry = versions.entry(from.name().clone()).or_default();
        if let Some(kept) = entry
            .kept
            .iter()
            .find(|kept| kept.code().version().hash == hash)
        {
            // Committed before: it keeps its place among the versions.
            return Ok(kept.clone());
        }
        let generation = if options.down {
            entry.oldest -= 1;
            entry.oldest
        } else {
            entry.newest += 1;
            entry.newest
        };
        Ok(Arc::new(from.with_code(loaded, generation)))
    }

    /// Loads the code in `source` as a version of `from`'s component.
    async fn load_code(
        &self,
        from: &Arc<Component>,
        source: &VersionSource,
        label: Option<String>,
    ) -> Result<LoadedComponent, String> {
        let source = source.clone();
        let engine_component = from.clone();
        let name = from.name().clone();
        let cache_dir = self.cache_dir.clone();
        tokio::task::spawn_blocking(move || {
            let engine = engine_component.engine();
            match &source {
                VersionSource::File(path) => LoadedComponent::load_labelled(
                    engine,
                    &name,
                    path,
                    &cache_dir,
                    label.as_deref(),
                ),
                VersionSource::Bytes { bytes, origin } => LoadedComponent::from_bytes(
                    engine,
                    &name,
                    bytes,
                    origin,
                    &cache_dir,
                    label.as_deref(),
                ),
            }
        })
        .await
        .map_err(|e| format!("loading the new version failed: {e}"))?
        .map_err(|e| format!("{e:#}"))
    }

    /// Reads the version in `path` and checks it against `component`'s
    /// current one (it is a component, links against the host, exports
    /// what the current one exports), changing nothing: what a cluster
    /// checks on the node a swap is asked of before it records it.
    pub async fn check(
        &self,
        component: &str,
        path: &std::path::Path,
        given_label: Option<String>,
    ) -> Result<CheckedVersion, String> {
        let (_, target) = self.target(component)?;
        let from = target.current.clone();
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| format!("cannot read component {}: {e}", path.display()))?;
        let source = VersionSource::Bytes {
            bytes: Arc::from(bytes.as_slice()),
            origin: path.display().to_string(),
        };
        let loaded = self.load_code(&from, &source, given_label).await?;
        let to = from.with_code(loaded, 0);
        check_exports(&from, &to)?;
        let version = to.code().version();
        Ok(CheckedVersion {
            hash: version.hash,
            label: version.label.to_string(),
            from_label: label(&from),
            bytes,
        })
    }

    /// `component`'s versions on this node.
    pub fn local(&self, component: &str) -> Option<LocalVersions> {
        let versions = self.versions();
        let (name, target) = self.target(component).ok()?;
        let entry = versions.get(&name);
        Some(LocalVersions {
            current: target.current.code().version().hash,
            swap: entry
                .and_then(|entry| entry.swap.as_ref())
                .map(|swap| LocalSwap {
                    to: swap.to.code().version().hash,
                    share: swap.share,
                    swept: swap.swept.load(Ordering::Acquire),
                    summary: describe_swap(swap),
                }),
            last: entry.and_then(|entry| entry.last.clone()),
        })
    }

    /// Hands the states of up to 16 live processes to sandbox instances of
    /// `to` (nothing to write to, nobody to call): any refusal or trap
    /// refuses the swap. Returns how many states were taken over.
    async fn dry_run(&self, name: &str, to: &Arc<Component>) -> Result<usize, String> {
        let grant = to.grant();
        let sandbox = to.granted(Grant {
            calls: Arc::new(NoCalls),
            storage: grant
                .storage
                .clone()
                .read_only("a swap's dry run writes nothing"),
            ..grant.clone()
        });
        let deadline = self.processes.limits().call_deadline;
        let mut taken = 0;
        for (key, handed) in self.processes.sample_states(name, DRY_RUN_SAMPLES).await {
            let Ok(handed) = handed else {
                // It ended or is stopping meanwhile: nothing to try.
                continue;
            };
            let memory = Arc::new(AtomicUsize::new(0));
            let who = Who {
                key: &key,
                fence: None,
                memory: &memory,
            };
            let start = if Arc::ptr_eq(to.version(), &handed.version) {
                Start::TakeOver(handed.state)
            } else {
                Start::TakeOverFrom {
                    state: handed.state,
                    from_version: handed.version,
                }
            };
            if let Err(reason) = sandbox.start(who, &start, deadline).await {
                return Err(refused_by_dry_run(&key, to, &reason));
            }
            taken += 1;
        }
        Ok(taken)
    }

    /// Moves every live process in a task of its own.
    fn sweep(&self, name: Arc<str>, swept: Arc<AtomicBool>) {
        let processes = self.processes.clone();
        tokio::spawn(async move {
            processes.converge(&name, MOVES_AT_ONCE, SWEEP_PASSES).await;
            swept.store(true, Ordering::Release);
        });
    }

    /// Rolls the swap to `to` back by itself once its failures pass its
    /// threshold; ends when the swap does.
    fn watch(&self, name: Arc<str>, to: Arc<Component>) {
        let this = self.this.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WATCH_EVERY).await;
                let Some(swaps) = this.upgrade() else { return };
                let reason = {
                    let versions = swaps.versions();
                    let Some(swap) = versions.get(&name).and_then(|v| v.swap.as_ref()) else {
                        return;
                    };
                    if !Arc::ptr_eq(&swap.to, &to) {
                        return;
                    }
                    too_many_failures(swap)
                };
                if let Some(reason) = reason {
                    tracing::error!(component = %name, "the swap to {} rolls back by itself: {reason}", label(&to));
                    let why = format!("rolled back by itself: {reason}");
                    let _ = swaps.roll_back(&name, &why, Some(&to));
                    return;
                }
            }
        });
    }

    /// Every process of the swap's canary and the rest: the share is 100%.
    pub fn promote(&self, component: &str) -> Result<String, String> {
        let (name, swept) = {
            let mut versions = self.versions();
            let (name, target) = self.target(component)?;
            let swap = versions
                .get_mut(&name)
                .and_then(|versions| versions.swap.as_mut())
                .ok_or_else(|| format!("`{name}` is not being swapped"))?;
            let Some(next) = target.next.clone() else {
                return Err(format!("`{name}` is not being swapped"));
            };
            if next.share == 100 {
                return Err(format!("the swap of `{name}` moves every process already"));
            }
            self.processes.targets().set(
                &name,
                Target {
                    current: target.current.clone(),
                    next: Some(Next { share: 100, ..next }),
                    leaving: None,
                },
            );
            swap.share = 100;
            // A sweep of its own: the canary's may still be running.
            swap.swept = Arc::new(AtomicBool::new(false));
            (name, swap.swept.clone())
        };
        self.sweep(name.clone(), swept);
        tracing::info!(component = %name, "swap promoted to every process");
        Ok(format!("every process of {name} moves now"))
    }

    /// Puts every process back on the version the swap started from.
    pub fn rollback(&self, component: &str) -> Result<String, String> {
        self.roll_back(component, "rolled back by an operator", None)
    }

    /// Rolls `component`'s swap back (only if it is the swap to `expected`,
    /// when given: a watch or a commit that waited must not end another).
    pub(super) fn roll_back(
        &self,
        component: &str,
        why: &str,
        expected: Option<&Arc<Component>>,
    ) -> Result<String, String> {
        let progress = Arc::new(SwapProgress::default());
        let swept = Arc::new(AtomicBool::new(false));
        let (name, swap) = {
            let mut versions = self.versions();
            let (name, _) = self.target(component)?;
            let entry = versions.entry(name.clone()).or_default();
            let swap = entry
                .swap
                .take_if(|swap| expected.is_none_or(|to| Arc::ptr_eq(&swap.to, to)))
                .ok_or_else(|| format!("`{name}` is not being swapped"))?;
            entry.last = Some(format!(
                "{} to {}: {why}",
                label(&swap.from),
                label(&swap.to)
            ));
            stop_counting(&swap);
            entry.rollback = Some(RollBack {
                to: swap.from.clone(),
                progress: progress.clone(),
                started: Instant::now(),
                swept: swept.clone(),
            });
            self.processes.targets().set(
                &name,
                Target {
                    current: swap.from.clone(),
                    next: None,
                    leaving: Some(Next {
                        code: swap.to.clone(),
                        share: 100,
                        progress,
                    }),
                },
            );
            (name, swap)
        };
        self.sweep(name.clone(), swept);
        tracing::warn!(component = %name, "swap to {} {why}: processes move back to {}", label(&swap.to), label(&swap.from));
        Ok(format!(
            "{name} goes back to {}: its processes move back (or restart from storage where \
             their state cannot be handed down)",
            label(&swap.from)
        ))
    }

    /// Ends the swap: the new version is current, the old one is kept.
    pub fn commit(&self, component: &str) -> Result<String, String> {
        self.commit_swap(component, None)
    }

    /// Commits `component`'s swap (only if it is the swap to `expected`,
    /// when given).
    fn commit_swap(
        &self,
        component: &str,
        expected: Option<&Arc<Component>>,
    ) -> Result<String, String> {
        let mut versions = self.versions();
        let (name, target) = self.target(component)?;
        let entry = versions.entry(name.clone()).or_default();
        let Some(swap) = entry
            .swap
            .take_if(|swap| expected.is_none_or(|to| Arc::ptr_eq(&swap.to, to)))
        else {
            return Err(format!("`{name}` is not being swapped"));
        };
        if swap.share < 100 {
            entry.swap = Some(swap);
            return Err(format!(
                "the swap of `{name}` is a canary: promote it first, or roll it back"
            ));
        }
        self.processes
            .targets()
            .set(&name, Target::only(swap.to.clone()));
        stop_counting(&swap);
        entry.kept.retain(|kept| !Arc::ptr_eq(kept, &swap.to));
        entry.kept.push_front(target.current.clone());
        entry.kept.truncate(KEPT_VERSIONS);
        entry.last = Some(format!(
            "{} to {}: committed",
            label(&swap.from),
            label(&swap.to)
        ));
        tracing::info!(component = %name, "swap to {} committed", label(&swap.to));
        Ok(format!(
            "{name} runs {} (kept to swap back to: {})",
            label(&swap.to),
            entry
                .kept
                .iter()
                .map(|kept| label(kept))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// Every component's versions.
    pub fn view(&self, components: &[Arc<Component>]) -> Vec<VersionsView> {
        let versions = self.versions();
        components
            .iter()
            .filter_map(|component| {
                let name = component.name();
                let target = self.processes.targets().get(name)?.1.load_full();
                let entry = versions.get(name);
                let mut running: Vec<(String, usize)> = self
                    .processes
                    .versions_running(name)
                    .into_iter()
                    .map(|(version, count)| (version.to_string(), count))
                    .collect();
                running.sort();
                let swapping = entry.is_some_and(|entry| entry.swap.is_some());
                let figures = [Some(&target.current)]
                    .into_iter()
                    .chain(
                        [target.next.as_ref(), target.leaving.as_ref()].map(|n| n.map(|n| &n.code)),
                    )
                    .flatten()
                    .filter(|_| swapping)
                    .map(|code| (label(code), code.code().stats().figures()))
                    .collect();
                Some(VersionsView {
                    component: name.to_string(),
                    current: describe(&target.current),
                    kept: entry
                        .map(|entry| entry.kept.iter().map(|kept| describe(kept)).collect())
                        .unwrap_or_default(),
                    running,
                    figures,
                    swap: entry
                        .and_then(|entry| entry.swap.as_ref())
                        .map(describe_swap),
                    rollback: entry
                        .and_then(|entry| entry.rollback.as_ref())
                        .map(describe_rollback),
                    last: entry.and_then(|entry| entry.last.clone()),
                })
            })
            .collect()
    }
}

/// A component reserved for a swap being checked; the reservation ends
/// with it, however the checks end.
struct Reserved<'a> {
    swaps: &'a Swaps,
    name: Arc<str>,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.swaps.versions().get_mut(&self.name) {
            entry.starting = false;
        }
    }
}

/// The swap's versions stop counting what their processes do.
fn stop_counting(swap: &Swap) {
    swap.from.code().stats().stop_counting();
    swap.to.code().stats().stop_counting();
}

/// Why a swap must roll back, if its failures are past its threshold.
fn too_many_failures(swap: &Swap) -> Option<String> {
    let progress = &swap.progress;
    let failed = progress.load(&progress.failed);
    let crashed = progress.load(&progress.crashed);
    let moved = progress.load(&progress.moved);
    let started = progress.load(&progress.started);
    let failures = failed + crashed;
    let allowed = ((moved + failed + started) * u64::from(swap.max_failures) / 100)
        .max(MIN_FAILURES_TO_ROLL_BACK - 1);
    if failures <= allowed {
        return None;
    }
    let last = progress
        .last_failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .map(|last| format!("; last: {last}"))
        .unwrap_or_default();
    Some(format!(
        "{failed} processes could not move and {crashed} crashed on it, past {}% of {} \
         processes moved or started on it{last}",
        swap.max_failures,
        moved + failed + started
    ))
}

/// The checks a new version passes before any process is touched: it
/// exports what the current one exports.
fn check_exports(from: &Component, to: &Component) -> Result<(), String> {
    let (old, new) = (from.code(), to.code());
    if old.process_pre().is_some() && new.process_pre().is_none() {
        return Err(format!(
            "version {} does not export the process behaviour (otp:platform/behaviour), \
             which version {} runs its processes with",
            label(to),
            label(from)
        ));
    }
    if old.http_pre().is_some() && new.http_pre().is_none() {
        return Err(format!(
            "version {} does not export wasi:http/incoming-handler, which version {} serves \
             HTTP with",
            label(to),
            label(from)
        ));
    }
    Ok(())
}

fn refused_by_dry_run(key: &ProcessKey, to: &Component, reason: &str) -> String {
    format!(
        "the dry run refused the swap: version {} could not take over the state of {key}: \
         {reason}; nothing changed",
        label(to)
    )
}

fn label(component: &Component) -> String {
    component.code().version().label.to_string()
}

fn describe(component: &Component) -> String {
    let version = component.code().version();
    format!("{} ({})", version.label, &version.hash_hex()[..12])
}

fn describe_swap(swap: &Swap) -> String {
    let progress = &swap.progress;
    let pauses = progress
        .pauses()
        .map(|(p50, p99, max)| format!("; pause p50 {p50:?}, p99 {p99:?}, max {max:?}"))
        .unwrap_or_default();
    format!(
        "{} to {} ({}%{}), {:.1}s: {} moved, {} could not move, {} restarted, {} crashed on it{}{}",
        label(&swap.from),
        label(&swap.to),
        swap.share,
        if swap.direction == Direction::Down {
            ", down"
        } else {
            ""
        },
        swap.started.elapsed().as_secs_f64(),
        progress.load(&progress.moved),
        progress.load(&progress.failed),
        progress.load(&progress.restarted),
        progress.load(&progress.crashed),
        pauses,
        if swap.swept.load(Ordering::Acquire) {
            "; swept"
        } else {
            "; sweeping"
        }
    )
}

fn describe_rollback(rollback: &RollBack) -> String {
    let progress = &rollback.progress;
    format!(
        "back to {}, {:.1}s: {} moved back, {} could not move back, {} restarted from \
         storage{}",
        label(&rollback.to),
        rollback.started.elapsed().as_secs_f64(),
        progress.load(&progress.moved),
        progress.load(&progress.failed),
        progress.load(&progress.restarted),
        if rollback.swept.load(Ordering::Acquire) {
            "; swept (hibernated ones move at their wake)"
        } else {
            "; sweeping"
        }
    )
}

/// The calls of a dry run's sandbox: none.
struct NoCalls;

impl GuestCalls for NoCalls {
    fn call<'a>(
        &'a self,
        _component: &'a str,
        _name: &'a str,
        _message: Vec<u8>,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, CallError>> {
        Box::pin(async { Err(refused()) })
    }

    fn cast(&self, _component: &str, _name: &str, _message: Vec<u8>) -> Result<(), CallError> {
        Err(refused())
    }

    fn may_call(&self, _from: &str, _to: &str) -> Result<(), CallError> {
        Err(refused())
    }
}

fn refused() -> CallError {
    CallError::Refused("a swap's dry run calls nobody".into())
}
