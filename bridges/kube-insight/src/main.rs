//! `kube-insight`: one binary, many targets. See `kube-insight --help`.

mod cli;
mod config;
mod demo_cmd;
mod events_cmd;
mod logs_cmd;
mod remote;
mod run;
mod store_open;
mod suspects_cmd;
mod targets;
mod topology_cmd;

/// jemalloc, as vector and TiKV use: under ingest load glibc's malloc spent
/// about half of the process' CPU time in `malloc`/`free`/consolidation
/// (BENCHMARKS.md, "allocator").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // ring is the crypto of every TLS client and listener here; the
    // Cassandra driver links aws-lc-rs too, so the default must be named.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Give freed memory back to the OS on jemalloc's decay schedule (10 s)
    // even while the process is idle, not only when it next allocates: after
    // a burst (Prometheus replaying its WAL) RSS returns to the steady state.
    #[cfg(not(target_env = "msvc"))]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("kube-insight: warning: jemalloc background thread not started: {e}");
    }
    let cli = match cli::parse() {
        Ok(c) => c,
        Err(e) => return cli::usage_error(e),
    };
    match cli::dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-insight: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
