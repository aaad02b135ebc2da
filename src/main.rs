//! The `p2pcdn` binary: see `p2pcdn --help`.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
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
