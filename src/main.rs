//! Wires the parts together: arguments, logging, signals, the tunnel.
#![deny(unsafe_code)]

use log::{error, info};
use std::process::ExitCode;
use std::time::Duration;
use taptun::{cli, key, sys, tunnel};

fn init_logging(level: Option<log::LevelFilter>) {
    let level = level
        .or_else(|| {
            std::env::var("RUST_LOG")
                .ok()
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(log::LevelFilter::Info);
    let _ = simple_logger::SimpleLogger::new().with_level(level).init();
}

fn genkey(args: &[&str]) -> ExitCode {
    match args {
        [path] if !path.starts_with('-') => match key::create(std::path::Path::new(path)) {
            Ok(_) => {
                println!(
                    "wrote a new 32-byte key to {path} (mode 0600); copy it to the other host"
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("taptun: {e}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!(
                "usage: taptun genkey FILE   (writes base64 of 32 random bytes, mode 0600; never overwrites)"
            );
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let args: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    match args.first() {
        Some(&"--version") | Some(&"-V") => {
            println!("taptun {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some(&"genkey") => return genkey(&args[1..]),
        _ => {}
    }
    let cli = match cli::parse(&args) {
        Ok(c) => c,
        Err(exit) => {
            return if exit.status.is_ok() {
                println!("{}", exit.output);
                ExitCode::SUCCESS
            } else {
                eprintln!("taptun: {}", exit.output.trim_end());
                eprintln!("Run taptun --help for usage.");
                ExitCode::from(2)
            };
        }
    };
    init_logging(cli.log_level);
    let (cfg, created) = match cli.to_config() {
        Ok(r) => r,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(e.exit_code());
        }
    };
    if created {
        info!(
            "created a new key in {} (mode 0600): copy it to the peer",
            cli.key_file.display()
        );
    }
    // Block the signals before any thread starts so only `wait_signal` sees them.
    if let Err(e) = sys::block_signals(&sys::HANDLED_SIGNALS) {
        error!("cannot block signals: {e}");
        return ExitCode::from(1);
    }
    let tun = match tunnel::Tunnel::open(cfg).and_then(|t| t.start().map(|_| t)) {
        Ok(t) => t,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    loop {
        match sys::wait_signal(&sys::HANDLED_SIGNALS, Duration::from_secs(1)) {
            Ok(Some(libc::SIGINT)) | Ok(Some(libc::SIGTERM)) => break,
            Ok(Some(libc::SIGUSR1)) => info!("stats: {}", tun.shared.counters.summary()),
            Ok(Some(_)) | Ok(None) => tun.tick(),
            Err(e) => {
                error!("waiting for signals: {e}");
                break;
            }
        }
    }
    info!("stopping {}: {}", tun.name(), tun.shared.counters.summary());
    // Exiting closes the TAP descriptor, which removes the interface.
    ExitCode::SUCCESS
}
