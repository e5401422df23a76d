//! The allocator's options, and the idle purge that gives freed memory back
//! to the OS without paying for it on every request.
//!
//! slotproxy allocates with mimalloc (v3, linked statically by the `mimalloc`
//! crate). Freed memory goes back to the OS in two steps: a page whose blocks
//! are all free returns its slices to an arena, and the arena *purges* them
//! (`madvise(MADV_DONTNEED)` with `purge_decommits`) `purge_delay` ms later.
//! Purging at once (`MIMALLOC_PURGE_DELAY=0`, the old setting) faults the
//! same pages in again on the next request: ~21% of the CPU per request
//! under the load bench (docs/performance/history.md, issue 11). With a delay, mimalloc
//! only carries out an expired purge when some thread frees a page or calls
//! `mi_collect` — which an idle proxy never does: after 10,000 idle
//! connections closed it kept 157.5 MiB instead of ~18.
//!
//! Two collectors carry the purges out:
//!
//! * arena purging is process-wide (any thread's collect purges every
//!   arena's expired slices), so one small thread calls `mi_collect(false)`
//!   once a second ([`start_collector`]): idle, the memory goes back within
//!   `PURGE_DELAY_MS` + one second;
//! * but a page belongs to the thread that allocated from it, and blocks
//!   another thread frees there wait until the owner next allocates or
//!   collects, so each proxy worker thread collects its own heap too: once a
//!   second while it serves connections (expired purges only), and its whole
//!   heap once when it goes quiet ([`connection_started`], [`next_collect`]).
//!   That needs tasks that stay on their thread, which pingora's workers are
//!   without work stealing.
//!
//! Under load neither finds much to do (the workers' own frees carry out
//! expired purges as they go); an idle process wakes once a second.
//!
//! mimalloc reads its options from the environment when it starts, before
//! `main`, so [`tune`] re-executes the process once with them set; a
//! `MIMALLOC_*` variable the operator set still wins (and a purge delay of 0
//! or below leaves the collector thread unstarted: nothing to carry out).

use std::cell::Cell;
use std::time::Duration;

/// How long a freed arena slice stays committed before it is purged, in
/// milliseconds: long enough that under load the pages a request frees are
/// taken again by the next requests instead of faulted in anew.
pub const PURGE_DELAY_MS: i64 = 100;

/// How often the collectors carry out expired purges.
pub const COLLECT_INTERVAL: Duration = Duration::from_secs(1);

/// The environment variable that marks the re-executed process.
const TUNED_MARK: &str = "SLOTPROXY_ALLOCATOR_TUNED";

/// mimalloc's options as slotproxy runs it (names as mimalloc reads them):
/// arenas committed lazily (an idle connection holds ~15 KiB, not 88), a
/// purge that decommits (the memory leaves the RSS at once, not when the
/// kernel is short of it), after [`PURGE_DELAY_MS`].
pub fn default_options() -> [(&'static str, String); 3] {
    [
        ("MIMALLOC_ARENA_EAGER_COMMIT", "0".to_string()),
        ("MIMALLOC_PURGE_DELAY", PURGE_DELAY_MS.to_string()),
        ("MIMALLOC_PURGE_DECOMMITS", "1".to_string()),
    ]
}

/// The options to put into the environment: [`default_options`] but those
/// the operator set (`is_set(name)`), whose values win.
pub fn options_to_set(is_set: impl Fn(&str) -> bool) -> Vec<(&'static str, String)> {
    default_options()
        .into_iter()
        .filter(|(name, _)| !is_set(name))
        .collect()
}

/// Re-execute the process once with [`options_to_set`] in its environment
/// (call first thing in `main`). Returns when already done, or when the
/// exec fails (e.g. the binary was replaced on disk): then the process runs
/// on with mimalloc's defaults.
pub fn tune() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(TUNED_MARK).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1)).env(TUNED_MARK, "1");
    for (name, value) in options_to_set(|name| std::env::var_os(name).is_some()) {
        cmd.env(name, value);
    }
    let _ = cmd.exec();
}

/// Whether a collector is needed for a purge delay (ms) in effect: 0 purges
/// at once and a negative delay never purges, so only a positive delay
/// leaves purges for someone to carry out.
pub fn needs_collector(purge_delay_ms: i64) -> bool {
    purge_delay_ms > 0
}

/// Start the collector thread if the purge delay in effect needs one (see
/// the module's doc). Process-wide: call once, from `serve`. Returns
/// whether it was started.
pub fn start_collector() -> bool {
    let delay = mi::purge_delay_ms();
    if !needs_collector(delay) {
        return false;
    }
    let started = std::thread::Builder::new()
        .name("slotproxy-alloc".into())
        .spawn(|| loop {
            std::thread::sleep(COLLECT_INTERVAL);
            mi::collect();
        });
    if let Err(e) = started {
        log::warn!("cannot start the allocator's collector thread ({e}): freed memory goes back to the OS only under traffic");
        return false;
    }
    true
}

thread_local! {
    /// Client connections started and ended on this thread, and whether
    /// its collector task runs (see [`connection_started`]).
    static STARTED: Cell<u64> = const { Cell::new(0) };
    static ENDED: Cell<u64> = const { Cell::new(0) };
    static WATCHED: Cell<bool> = const { Cell::new(false) };
}

/// Called by the connection loop for each new client connection, the
/// guard kept until the connection ends: counts the connection on this
/// thread and, unless one runs, starts this thread's collector task if
/// tasks stay on their thread (a current-thread tokio runtime: pingora's
/// workers without work stealing, which is how `server.rs` runs them).
///
/// Why per thread: a page belongs to the thread that allocated from it.
/// Blocks another thread frees there wait on the page until the owner next
/// allocates or collects, so memory freed across threads stays with an idle
/// owner (with two worker threads ~26 MiB after 10,000 connections closed),
/// out of reach of the process-wide collector.
pub fn connection_started() -> ConnectionOnThread {
    STARTED.set(STARTED.get().wrapping_add(1));
    if !WATCHED.get() {
        WATCHED.set(true);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
                && needs_collector(mi::purge_delay_ms())
            {
                handle.spawn(collect_this_thread());
            }
        }
    }
    ConnectionOnThread
}

/// A client connection being served on this thread (see
/// [`connection_started`]); dropped when it ends.
pub struct ConnectionOnThread;

impl Drop for ConnectionOnThread {
    fn drop(&mut self) {
        ENDED.set(ENDED.get().wrapping_add(1));
    }
}

/// A thread's collector: every [`COLLECT_INTERVAL`], what [`next_collect`]
/// says, until it has collected all with no connection left open.
async fn collect_this_thread() {
    // the first tick a whole interval away (`interval` ticks at once)
    let start = tokio::time::Instant::now() + COLLECT_INTERVAL;
    let mut tick = tokio::time::interval_at(start, COLLECT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = (STARTED.get(), ENDED.get());
    let mut collected_all = false;
    loop {
        tick.tick().await;
        let now = (STARTED.get(), ENDED.get());
        let open = now.0.wrapping_sub(now.1);
        let what = next_collect(now != seen, open, collected_all);
        match what {
            Collect::Expired => mi::collect(),
            Collect::All => mi::collect_all(),
            Collect::Nothing => {}
        }
        if what == Collect::All && open == 0 {
            // nothing left to give back until a connection comes: the
            // idle thread sleeps, and the next connection starts a new one
            WATCHED.set(false);
            return;
        }
        collected_all = what != Collect::Expired;
        seen = now;
    }
}

/// What a thread's collector does on a tick.
#[derive(Debug, PartialEq, Eq)]
pub enum Collect {
    /// Busy: carry out expired purges only (cheap; the pages freed moments
    /// ago stay for the next requests).
    Expired,
    /// Gone quiet: the thread's whole heap, full pages included, and every
    /// pending purge at once.
    All,
    /// Still quiet and already collected: nothing new to give back.
    Nothing,
}

/// The decision of a thread's collector tick: whether connections started
/// or ended on the thread since the last tick (`changed`), how many are
/// open on it now, and whether it collected all since it was last busy.
/// Quiet means no connection came or went, or none is left open.
pub fn next_collect(changed: bool, open: u64, collected_all: bool) -> Collect {
    if changed && open > 0 {
        Collect::Expired
    } else if collected_all && !changed {
        Collect::Nothing
    } else {
        Collect::All
    }
}

/// The two mimalloc calls used here. Declared by hand: `libmimalloc-sys`
/// has no constant for `mi_option_purge_delay` in v3's numbering.
mod mi {
    use std::ffi::{c_int, c_long};

    // mimalloc v3's `mi_option_t` (include/mimalloc.h): the 16th option.
    const MI_OPTION_PURGE_DELAY: c_int = 15;

    // the symbols come from the static mimalloc the `mimalloc` crate links
    use mimalloc as _;

    extern "C" {
        fn mi_option_get(option: c_int) -> c_long;
        fn mi_collect(force: bool);
    }

    /// The purge delay in effect, in ms (from `MIMALLOC_PURGE_DELAY` or
    /// mimalloc's default).
    pub fn purge_delay_ms() -> i64 {
        // SAFETY: reads (and on first use initializes) one option; any
        // thread may call it at any time.
        let delay = unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
        // c_long is i64 on 64-bit Linux, i32 elsewhere: widening either way
        delay as i64
    }

    /// Carry out the purges whose delay has expired (not forced: slices
    /// freed moments ago stay for the next requests), and collect this
    /// thread's own heap.
    pub fn collect() {
        // SAFETY: mimalloc's collect works on the calling thread's heap and
        // on the arenas under their own locks; safe from any thread.
        unsafe { mi_collect(false) }
    }

    /// Collect this thread's heap whole (its full pages too, which a
    /// normal collect skips) and purge every pending purge now.
    pub fn collect_all() {
        // SAFETY: as `collect`
        unsafe { mi_collect(true) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_is_set_when_the_operator_set_none() {
        let set = options_to_set(|_| false);
        let names: Vec<_> = set.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "MIMALLOC_ARENA_EAGER_COMMIT",
                "MIMALLOC_PURGE_DELAY",
                "MIMALLOC_PURGE_DECOMMITS"
            ]
        );
        let delay = &set[1].1;
        assert_eq!(delay, &PURGE_DELAY_MS.to_string());
    }

    #[test]
    fn the_operators_values_win() {
        let set = options_to_set(|name| name == "MIMALLOC_PURGE_DELAY");
        assert!(set.iter().all(|(n, _)| *n != "MIMALLOC_PURGE_DELAY"));
        assert_eq!(set.len(), 2);
        assert!(options_to_set(|_| true).is_empty());
    }

    #[test]
    fn a_thread_collects_all_once_when_it_goes_quiet() {
        // connections come and go: expired purges only
        assert_eq!(next_collect(true, 3, false), Collect::Expired);
        assert_eq!(next_collect(true, 3, true), Collect::Expired);
        // the last one closed: everything, at once
        assert_eq!(next_collect(true, 0, false), Collect::All);
        // open but idle keep-alive connections, none new: everything once
        assert_eq!(next_collect(false, 10_000, false), Collect::All);
        // and then nothing, until something changes
        assert_eq!(next_collect(false, 10_000, true), Collect::Nothing);
        assert_eq!(next_collect(false, 0, true), Collect::Nothing);
        // a connection that came and went between two quiet ticks
        assert_eq!(next_collect(true, 0, true), Collect::All);
    }

    #[test]
    fn a_collector_only_for_a_positive_delay() {
        assert!(!needs_collector(0), "0 purges at once");
        assert!(!needs_collector(-1), "negative never purges");
        assert!(needs_collector(1));
        assert!(needs_collector(PURGE_DELAY_MS));
    }
}
