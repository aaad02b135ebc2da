//! The `p2pcdn` binary: see `p2pcdn --help`.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = p2pcdn::cli::Cli::parse();
    // hickory-server logs every query at info; keep that at warn unless asked.
    let spec = if cli.log.contains("hickory") {
        cli.log.clone()
    } else {
        format!("{},hickory_server=warn", cli.log)
    };
    let filter =
        EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info,hickory_server=warn"));
    let log_file = cli.log_file().and_then(|path| {
        if let Some(d) = path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| {
                eprintln!(
                    "cannot open log file {}: {e}; logging to stderr",
                    path.display()
                )
            })
            .ok()
    });
    let json = cli.log_format == p2pcdn::cli::LogFormat::Json;
    let writer = match log_file {
        Some(f) => BoxMakeWriter::new(std::sync::Mutex::new(f)),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    // Colours only for a person at a terminal.
    let ansi = cli.log_file().is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    match p2pcdn::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Print the cause chain, skipping causes already quoted by their parent.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg.push_str(": ");
                    msg.push_str(&c);
                }
            }
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Keeps memory the process frees for its next allocations instead of
/// handing it back to the kernel at once (glibc `mallopt`): blocks of up to
/// 32 MiB come from the heap rather than a fresh `mmap` each, and up to
/// 128 MiB of free heap is kept. Replication and blob serving allocate and
/// free megabyte buffers all the time; returned memory comes back as fresh
/// pages, which the kernel must zero and which, on a virtual machine with
/// free page reporting (the benchmark machine), the host must fault in
/// again, about 7 µs per page. In the 1 GiB replication benchmark this
/// took the time from 7.3–7.7 s to 6.3 s (docs/BENCHMARKS.md). The cost is
/// at most that much freed memory staying in the process's RSS.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}
