//! The `sipline-load` command: parses the command line, runs the sessions (see the
//! library), prints the summary table or JSON, and exits 1 when any session failed.

use std::process::ExitCode;

use clap::Parser;
use sipline_load::Options;

fn main() -> ExitCode {
    let options = Options::parse();
    if let Err(e) = options.validate() {
        eprintln!("sipline-load: {e}");
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    // two descriptors a session (its WebSocket and its UDP socket)
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("sipline-load: cannot raise the descriptor limit: {e}");
    }
    // 8 MiB stacks: the pure-Rust Opus codec keeps large frames on the stack
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads)
        .enable_all()
        .thread_stack_size(8 << 20)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sipline-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(sipline_load::run(options.clone()));
    if options.json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => eprintln!("sipline-load: {e}"),
        }
    } else {
        print!("{}", report.table());
    }
    match report.failure_summary() {
        None => ExitCode::SUCCESS,
        Some(why) => {
            for c in report.calls.iter().filter(|c| !c.ok).take(10) {
                eprintln!(
                    "sipline-load: session {} ({}): {}",
                    c.index,
                    c.user.as_deref().unwrap_or("no account"),
                    c.error.as_deref().unwrap_or("failed")
                );
            }
            eprintln!("sipline-load: {why}");
            ExitCode::FAILURE
        }
    }
}
