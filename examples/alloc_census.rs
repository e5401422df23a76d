//! Where an idle keep-alive client connection's memory goes (docs/performance/
//! memory.md): runs the real `slotproxy serve` in this
//! process under a counting global allocator, opens CONNS connections that
//! each make one request and then stay idle, and prints the heap blocks
//! those connections hold, by exact size — how many per connection and how
//! many bytes — and, for the largest, where they were allocated.
//!
//! ```sh
//! cargo run --release --example alloc_census -- 2000
//! CENSUS_PARALLEL=256 cargo run --release --example alloc_census -- 8000  # 256 at a time
//! CENSUS_TRACE=1 cargo run --release --example alloc_census -- 2000   # + call sites
//! MIMALLOC_ARENA_EAGER_COMMIT=0 MIMALLOC_PURGE_DELAY=100 MIMALLOC_PURGE_DECOMMITS=1 \
//!   target/release/examples/alloc_census 10000                        # RSS as slotproxy's
//! ```
//!
//! The allocator underneath is slotproxy's (mimalloc); run it with the
//! `MIMALLOC_*` options `slotproxy serve` sets (src/allocator.rs) to see the same
//! RSS. Heap blocks are what the code holds; RSS per connection adds the
//! allocator's size classes and fragmentation.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Blocks up to this size are counted by exact size; larger ones together.
const EXACT: usize = 256 * 1024;
/// Live blocks per size (`EXACT`: every larger one).
static LIVE: [AtomicIsize; EXACT + 1] = [const { AtomicIsize::new(0) }; EXACT + 1];
static LARGE_BYTES: AtomicIsize = AtomicIsize::new(0);
/// While set, allocations of a size in `TRACED` record their call site.
static TRACING: AtomicBool = AtomicBool::new(false);
static TRACED: Mutex<Vec<usize>> = Mutex::new(Vec::new());
static SITES: Mutex<Option<HashMap<(usize, String), usize>>> = Mutex::new(None);

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

struct Census;

fn bin(size: usize) -> usize {
    size.min(EXACT)
}

fn note_site(size: usize) {
    // the census itself allocates here: not counted as a call site
    if INSIDE.with(|i| i.replace(true)) {
        return;
    }
    let traced = TRACED
        .try_lock()
        .map(|t| t.contains(&size))
        .unwrap_or(false);
    if traced {
        let bt = std::backtrace::Backtrace::force_capture().to_string();
        // keep the frames of the code that asked, not the allocator's
        let frames: Vec<&str> = bt
            .lines()
            .filter(|l| !l.trim_start().starts_with("at "))
            .filter(|l| {
                ![
                    "alloc_census::",
                    "alloc::",
                    "std::backtrace",
                    "__rust",
                    "core::ops",
                    ": note_site",
                    ": alloc",
                    ": allocate",
                    ": box_new",
                ]
                .iter()
                .any(|s| l.contains(s))
            })
            .take(frames_kept())
            .collect();
        if let Ok(mut sites) = SITES.lock() {
            *sites
                .get_or_insert_with(HashMap::new)
                .entry((size, frames.join("\n")))
                .or_default() += 1;
        }
    }
    INSIDE.with(|i| i.set(false));
}

/// Call-site frames printed per block size (`CENSUS_FRAMES`, default 8).
fn frames_kept() -> usize {
    std::env::var("CENSUS_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

unsafe impl GlobalAlloc for Census {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            LIVE[bin(layout.size())].fetch_add(1, Ordering::Relaxed);
            if layout.size() > EXACT {
                LARGE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            }
            if TRACING.load(Ordering::Relaxed) {
                note_site(layout.size());
            }
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        LIVE[bin(layout.size())].fetch_sub(1, Ordering::Relaxed);
        if layout.size() > EXACT {
            LARGE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
    }
}

#[global_allocator]
static GLOBAL: Census = Census;

fn snapshot() -> Vec<isize> {
    LIVE.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

/// This process's resident set, in KiB.
fn rss_kb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n";

/// Send one request and read its whole answer (Content-Length framed).
fn one_request(s: &mut TcpStream) {
    s.write_all(REQUEST).unwrap();
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "the proxy closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return;
            }
        }
    }
}

fn main() {
    let conns: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("CONNS is a number"))
        .unwrap_or(2000);
    // both ends of every connection are in this process
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    assert!(
        (lim.rlim_cur as usize) > 2 * conns + 200,
        "ulimit -n {} is too low for {conns} connections (both ends are here)",
        lim.rlim_cur
    );
    let dir = std::env::temp_dir().join(format!("alloc-census-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (port, admin, metrics, app) = (free_port(), free_port(), free_port(), free_port());
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = ["127.0.0.1:{port}"]
threads = 1
upgrade_sock = "{dir}/upgrade.sock"
pid_file = "{dir}/slotproxy.pid"
[admin]
listen = "127.0.0.1:{admin}"
token = "census"
[metrics]
listen = "127.0.0.1:{metrics}"
[state]
dir = "{dir}/state"
[[demo.apps]]
listen = "127.0.0.1:{app}"
version = "v1"
[[sites]]
name = "shop"
hostnames = ["shop.test"]
[[sites.slots]]
name = "production"
build_version = "v1"
instances = ["127.0.0.1:{app}"]
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    std::thread::spawn(move || {
        let r = slotproxy::server::serve(slotproxy::server::ServeArgs {
            config,
            upgrade: false,
        });
        eprintln!("serve ended: {r:?}");
        std::process::exit(1);
    });
    // wait until it answers, then warm up: pools, lazily built tables,
    // the first connection's one-time costs
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut warm = loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slotproxy did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    for _ in 0..50 {
        one_request(&mut warm);
    }
    for _ in 0..50 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        one_request(&mut s);
    }
    drop(warm);
    if std::env::var_os("CENSUS_TRACE").is_some() {
        *TRACED.lock().unwrap() = Vec::new();
    }
    let mut held = Vec::with_capacity(conns);
    std::thread::sleep(Duration::from_millis(500));
    let (before, rss_before) = (snapshot(), rss_kb());
    // CENSUS_PARALLEL clients open the connections side by side (memory.sh's
    // idle_conns.py has 256 requests in flight while it opens its
    // connections), so requests' short-lived blocks interleave with the
    // connections' long-lived ones as they do in production
    let parallel: usize = std::env::var("CENSUS_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let opened = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..parallel)
            .map(|w| {
                scope.spawn(move || {
                    let n = conns / parallel + usize::from(w < conns % parallel);
                    let mut mine = Vec::with_capacity(n);
                    for _ in 0..n {
                        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                        one_request(&mut s);
                        mine.push(s);
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect::<Vec<_>>()
    });
    held.extend(opened);
    std::thread::sleep(Duration::from_millis(1000));
    let (after, rss_held) = (snapshot(), rss_kb());

    let mut rows: Vec<(usize, isize)> = (0..=EXACT)
        .map(|size| (size, after[size] - before[size]))
        .filter(|&(_, d)| d != 0)
        .collect();
    let bytes_of = |size: usize, d: isize| {
        if size == EXACT {
            LARGE_BYTES.load(Ordering::Relaxed)
        } else {
            size as isize * d
        }
    };
    rows.sort_by_key(|&(size, d)| -bytes_of(size, d));
    let total: isize = rows.iter().map(|&(s, d)| bytes_of(s, d)).sum();
    println!(
        "{conns} idle keep-alive connections hold {:.1} KiB of heap blocks each; \
         RSS {:.1} -> {:.1} MiB, {:.1} KiB per connection\n",
        total as f64 / conns as f64 / 1024.0,
        rss_before / 1024.0,
        rss_held / 1024.0,
        (rss_held - rss_before) / conns as f64
    );
    println!("| block size B | blocks per connection | bytes per connection |");
    println!("| ---: | ---: | ---: |");
    for &(size, d) in rows.iter().take(12) {
        let per = d as f64 / conns as f64;
        if per.abs() < 0.05 {
            continue;
        }
        println!(
            "| {size} | {per:.2} | {:.0} |",
            bytes_of(size, d) as f64 / conns as f64
        );
    }

    if std::env::var_os("CENSUS_TRACE").is_some() {
        // where the main per-connection blocks come from: trace their sizes
        // on a few more connections
        *TRACED.lock().unwrap() = rows
            .iter()
            .filter(|&&(s, d)| s < EXACT && d as f64 / conns as f64 >= 0.9)
            .map(|&(s, _)| s)
            .take(frames_kept())
            .collect();
        TRACING.store(true, Ordering::Relaxed);
        for _ in 0..20 {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            one_request(&mut s);
            held.push(s);
        }
        std::thread::sleep(Duration::from_millis(300));
        TRACING.store(false, Ordering::Relaxed);
        let sites = SITES.lock().unwrap().take().unwrap_or_default();
        let mut sites: Vec<_> = sites.into_iter().collect();
        sites.sort_by_key(|((size, _), n)| (*size, std::cmp::Reverse(*n)));
        for ((size, frames), n) in sites {
            if n >= 10 {
                println!("\n{size} B, {n} allocations (20 connections) at:\n{frames}");
            }
        }
    }
    drop(held);
    std::process::exit(0);
}
