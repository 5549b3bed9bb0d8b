//! Wires the parts together: arguments, logging, signals, the engine.
#![deny(unsafe_code)]

use log::{error, info, warn};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use taptun::hook::{DOWN_HOOK_LIMIT, HookEnd, run_hook};
use taptun::{cli, conffile, engine, key, sys};

/// Logs the counters (and prints them as one JSON line when asked).
fn report(tun: &engine::Tunnel, what: &str, json: bool) {
    info!("{what}: {}", tun.status());
    if json {
        // One write of one line: a monitoring script reads whole objects.
        println!("{}", tun.status_json());
    }
}

/// SIGHUP: re-reads the key file; a bad one leaves the key in use.
fn reload_key(tun: &mut engine::Tunnel, path: &Path, max_age: Duration) {
    match key::load(path) {
        Ok(k) => {
            let rotated = match tun.rotate_key(k) {
                Ok(r) => r,
                Err(e) => {
                    error!("SIGHUP: {e}; keeping the current key");
                    return;
                }
            };
            if rotated && tun.confidential() {
                info!(
                    "SIGHUP: new key from {} in use for the next handshake; sessions made under the old one end within 120 s",
                    path.display()
                );
            } else if rotated {
                info!(
                    "SIGHUP: new key from {} in use; the old one is still accepted for {:.1} s",
                    path.display(),
                    max_age.as_secs_f64()
                );
            } else {
                info!("SIGHUP: key in {} unchanged", path.display());
            }
        }
        Err(e) => error!("SIGHUP: {e}; keeping the current key"),
    }
}

fn notify(notifier: &Option<sys::Notifier>, msg: &str) {
    if let Some(n) = notifier
        && let Err(e) = n.notify(msg)
    {
        warn!("cannot notify the service manager ({msg}): {e}");
    }
}

/// `--user NAME` looked up, before anything is created: no such user is a
/// configuration error (exit code 2), a failed lookup (NSS) an
/// environment one (1); either said in one line.
fn lookup_user(name: Option<&str>) -> Result<Option<sys::User>, ExitCode> {
    let Some(n) = name else {
        return Ok(None);
    };
    match sys::lookup_user(n) {
        Ok(Some(u)) => Ok(Some(u)),
        Ok(None) => {
            error!("--user {n}: no such user");
            Err(ExitCode::from(2))
        }
        Err(e) => {
            error!("--user {n}: cannot look it up: {e}");
            Err(ExitCode::from(1))
        }
    }
}

fn init_logging(level: Option<log::LevelFilter>) {
    let level = level
        .or_else(|| {
            std::env::var("RUST_LOG")
                .ok()
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(log::LevelFilter::Info);
    let logger = simple_logger::SimpleLogger::new().with_level(level);
    // The journal stamps every line itself: a second timestamp only
    // lengthens the one line an error gets.
    let logger = if stderr_is_journal() {
        logger.without_timestamps()
    } else {
        logger
    };
    let _ = logger.init();
}

/// Whether stderr is systemd's journal stream: `JOURNAL_STREAM` names its
/// device and inode (systemd.exec(5)), which a redirected stderr no longer
/// matches.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream == format!("{}:{}", meta.dev(), meta.ino())
}

/// The usage line of `taptun genkey`.
const GENKEY_USAGE: &str =
    "taptun genkey FILE (writes base64 of 32 random bytes, mode 0600; never overwrites)";

fn genkey(args: &[&str]) -> ExitCode {
    match args {
        ["-h" | "--help"] => {
            println!("usage: {GENKEY_USAGE}");
            ExitCode::SUCCESS
        }
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
        [] => {
            eprintln!("taptun genkey: missing FILE; usage: {GENKEY_USAGE}");
            ExitCode::from(2)
        }
        [a] => {
            eprintln!("taptun genkey: unknown option {a}; usage: {GENKEY_USAGE}");
            ExitCode::from(2)
        }
        [_, extra, ..] => {
            eprintln!("taptun genkey: unexpected {extra:?} after FILE; usage: {GENKEY_USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `taptun status [DEV|PATH] [--json|--prometheus]`: asks a running
/// tunnel over its status socket; without DEV, every tunnel of the host.
fn status(args: &[&str]) -> ExitCode {
    use engine::status::Form;
    let mut form = Form::Text;
    let mut target = None;
    for a in args {
        match *a {
            "--json" => form = Form::Json,
            "--prometheus" => form = Form::Prometheus,
            "-h" | "--help" => {
                println!(
                    "usage: taptun status [DEV|SOCKET|FOLDER] [--json|--prometheus]\n\nAsks a running taptun how it is, over its status socket (default {0}/DEV.sock).\nWithout DEV, every tunnel with a socket in {0} (a FOLDER: every socket in\nit): the reports one after another, {{\"tunnels\":[...]}} with --json, or one\nPrometheus document; a socket that does not answer is skipped with a note on\nstderr. Exit code 1 when none answers.",
                    engine::control::RUN_DIR
                );
                return ExitCode::SUCCESS;
            }
            a if a.starts_with('-') || target.is_some() => {
                eprintln!(
                    "taptun status: unexpected {a:?}; usage: taptun status [DEV|SOCKET|FOLDER] [--json|--prometheus]"
                );
                return ExitCode::from(2);
            }
            a => target = Some(a),
        }
    }
    use engine::control::{StatusError, Target};
    let answer = match engine::control::resolve(target) {
        Target::One(p) => engine::control::query(&p, form),
        Target::All(dir) => engine::control::query_all(&dir, form).and_then(|l| {
            let n = l.skipped.len();
            for e in l.skipped {
                // A stale socket (a crashed tunnel) must not hide the others.
                eprintln!("taptun status: {e}; skipped");
            }
            l.output.ok_or(StatusError::NoneAnswers(dir, n))
        }),
    };
    match answer {
        Ok(text) => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("taptun status: {e}");
            ExitCode::from(1)
        }
    }
}

/// A bad command line or config file: one line on stderr, exit code 2.
fn config_error(msg: &str) -> ExitCode {
    eprintln!("taptun: {msg}");
    ExitCode::from(2)
}

/// The command line, completed by the --config file if it names one.
fn arguments(args: &[&str]) -> Result<cli::Cli, ExitCode> {
    arguments_of::<cli::Cli>(args, "")
}

/// The command line of `A` (`taptun` or `taptun hub`), completed by its
/// --config file if it names one: the same rules and messages for both.
/// `prefix` goes before a command line's error (`hub: `); a file's
/// errors start with the file's name, which says enough.
fn arguments_of<A: cli::ConfigArgs>(args: &[&str], prefix: &str) -> Result<A, ExitCode> {
    let line = cli::parse_command_line_of::<A>(args).map_err(|exit| {
        if exit.status.is_ok() {
            println!("{}", exit.output);
            ExitCode::SUCCESS
        } else {
            config_error(&format!(
                "{prefix}{}; run {} --help for usage",
                cli::one_line_of::<A>(args, &exit.output),
                A::COMMAND
            ))
        }
    })?;
    let Some(path) = line.cli.config_file().map(Path::to_path_buf) else {
        return Ok(line.cli);
    };
    let name = path.display();
    let bytes = std::fs::read(&path)
        .map_err(|e| config_error(&format!("config file {name}: cannot read it: {e}")))?;
    let settings = conffile::parse_for::<A>(&bytes)
        .map_err(|e| config_error(&format!("{name}:{}: {}", e.line, e.message)))?;
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|s| (s.name.as_str(), s.value.as_str()))
        .collect();
    line.merge(&pairs)
        .map_err(|msg| config_error(&format!("{name}: {msg}")))
}

/// `taptun hub DIR LOCAL [options]`: many spokes on one port (`taptun::hub`).
fn hub_main(args: &[&str]) -> ExitCode {
    use taptun::hub::{self, Hub};
    let cli = match arguments_of::<hub::cli::HubCli>(args, "hub: ") {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(cli.log_level);
    let state_dir = std::env::var("STATE_DIRECTORY").ok();
    let cfg = match cli.to_config(state_dir.as_deref()) {
        Ok(c) => c,
        Err(e) => return config_error(&format!("hub: {e}")),
    };
    let user = match lookup_user(cli.user.as_deref()) {
        Ok(u) => u,
        Err(code) => return code,
    };
    // A bad file name or key file: one line naming the file, exit code 2,
    // before any socket or TAP exists.
    if let Err(e) = hub::check_dir(&cfg.dir) {
        if e.exit_code() == 2 {
            return config_error(&e.to_string());
        }
        error!("{e}");
        return ExitCode::from(e.exit_code());
    }
    let notifier = sys::Notifier::from_env().unwrap_or_else(|e| {
        warn!("{e}; not notifying the service manager");
        None
    });
    if let Err(e) = sys::block_signals(&sys::HANDLED_SIGNALS) {
        error!("cannot block signals: {e}");
        return ExitCode::from(1);
    }
    let priority = cfg.priority;
    let mut hub = match Hub::open(cfg).and_then(|mut h| h.add_all().map(|()| h)) {
        Ok(h) => h,
        Err(e) => {
            // A bad file name or key file: one line naming the file.
            if e.exit_code() == 2 {
                return config_error(&e.to_string());
            }
            error!("{e}");
            return ExitCode::from(e.exit_code());
        }
    };
    if let Some(u) = &user {
        if let Some(p) = hub.status_socket()
            && let Err(e) = std::os::unix::fs::chown(p, Some(u.uid), Some(u.gid))
        {
            warn!(
                "status socket {}: cannot hand it to --user {}: {e}",
                p.display(),
                u.name
            );
        }
        if u.uid != sys::euid() {
            taptun::priority::keep_after_drop(priority);
            if let Err(e) = sys::drop_privileges(u) {
                error!(
                    "--user {}: cannot switch to uid {}: {e}; --user needs root",
                    u.name, u.uid
                );
                return ExitCode::from(1);
            }
            info!(
                "now running as {} (uid {}): spokes added by SIGHUP cannot get a TAP",
                u.name, u.uid
            );
        }
    }
    if let Err(e) = hub.start() {
        error!("{e}");
        return ExitCode::from(1);
    }
    info!("hub on UDP {}: {} spokes", hub.local_addr(), hub.len());
    notify(
        &notifier,
        &format!(
            "READY=1\nSTATUS=hub on UDP {}, {} spokes",
            hub.local_addr(),
            hub.len()
        ),
    );
    let every = Duration::from_secs(cli.stats);
    let mut next_stats = Instant::now() + every;
    let mut watch = hub::Watch::default();
    loop {
        match sys::wait_signal(&sys::HANDLED_SIGNALS, engine::TICK) {
            Ok(Some(libc::SIGINT)) | Ok(Some(libc::SIGTERM)) => break,
            Ok(Some(libc::SIGUSR1)) => info!("stats:\n{}", hub.report()),
            Ok(Some(libc::SIGHUP)) => hub.reload(),
            Ok(_) => {}
            Err(e) => {
                error!("waiting for signals: {e}");
                break;
            }
        }
        hub.tick(&mut watch);
        if cli.stats > 0 && Instant::now() >= next_stats {
            info!("stats:\n{}", hub.report());
            next_stats = Instant::now() + every;
        }
    }
    notify(&notifier, "STOPPING=1");
    info!("stopping the hub:\n{}", hub.report());
    hub.shutdown();
    // Exiting closes the TAPs, which removes them.
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let args: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    match args.as_slice() {
        ["--version" | "-V"] => {
            println!("taptun {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        ["--version" | "-V", extra, ..] => {
            return config_error(&format!(
                "unexpected {extra:?} after --version, which takes no arguments"
            ));
        }
        ["genkey", rest @ ..] => return genkey(rest),
        ["status", rest @ ..] => return status(rest),
        ["hub", rest @ ..] => return hub_main(rest),
        _ => {}
    }
    let cli = match arguments(&args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(cli.log_level);
    // Resolve --user now: a typo must fail before anything is created
    // (the key file included).
    let user = match lookup_user(cli.user.as_deref()) {
        Ok(u) => u,
        Err(code) => return code,
    };
    let state_dir = std::env::var("STATE_DIRECTORY").ok();
    let (cfg, created) = match cli.to_config(state_dir.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(e.exit_code());
        }
    };
    if cfg.mtu < 1280 {
        warn!(
            "--mtu {}: below 1280 the TAP gets no IPv6 (IPv6 needs an MTU of 1280 or more)",
            cfg.mtu
        );
    }
    if created {
        info!(
            "created a new key in {} (mode 0600): copy it to the peer",
            cli.key_file.display()
        );
    }
    let notifier = sys::Notifier::from_env().unwrap_or_else(|e| {
        warn!("{e}; not notifying the service manager");
        None
    });
    let up = cli.up.as_deref().filter(|c| !c.trim().is_empty());
    let down = cli.down.as_deref().filter(|c| !c.trim().is_empty());
    let max_age = cfg.max_age;
    // Block the signals before any thread starts so only `wait_signal` sees them.
    if let Err(e) = sys::block_signals(&sys::HANDLED_SIGNALS) {
        error!("cannot block signals: {e}");
        return ExitCode::from(1);
    }
    let priority = cfg.priority;
    let mut tun = match engine::Tunnel::open(cfg) {
        Ok(t) => t,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    if let Some(cmd) = up {
        match run_hook(&tun, "up", cmd, None) {
            Ok(HookEnd::Exited(st)) if st.success() => info!("--up hook done"),
            Ok(HookEnd::Exited(st)) => {
                error!("--up hook `{cmd}` failed ({st}); stopping");
                return ExitCode::from(1);
            }
            Ok(HookEnd::Interrupted(sig)) => {
                info!("signal {sig} during the --up hook: stopping");
                return ExitCode::SUCCESS;
            }
            Ok(HookEnd::TimedOut) => {
                error!("--up hook `{cmd}` ran too long; stopping");
                return ExitCode::from(1);
            }
            Err(e) => {
                error!("--up hook `{cmd}`: cannot run /bin/sh: {e}; stopping");
                return ExitCode::from(1);
            }
        }
    }
    if let Some(u) = &user
        && let Some(p) = tun.status_socket()
        && let Err(e) = std::os::unix::fs::chown(p, Some(u.uid), Some(u.gid))
    {
        warn!(
            "status socket {}: cannot hand it to --user {}: {e}",
            p.display(),
            u.name
        );
    }
    if let Some(u) = &user {
        if u.uid == sys::euid() {
            info!("--user {}: already running as uid {}", u.name, u.uid);
        } else {
            taptun::priority::keep_after_drop(priority);
            if let Err(e) = sys::drop_privileges(u) {
                error!(
                    "--user {}: cannot switch to uid {} gid {}: {e}; --user needs root",
                    u.name, u.uid, u.gid
                );
                return ExitCode::from(1);
            }
            info!(
                "now running as {} (uid {}, gid {}); {} can no longer be reconfigured by taptun",
                u.name,
                u.uid,
                u.gid,
                tun.name()
            );
            if down.is_some() {
                warn!(
                    "the --down hook will run as {} without root or CAP_NET_ADMIN",
                    u.name
                );
            }
        }
    }
    if let Err(e) = tun.start() {
        error!("{e}");
        return ExitCode::from(1);
    }
    notify(
        &notifier,
        &format!(
            "READY=1\nSTATUS={} up, UDP {}",
            tun.name(),
            tun.local_addr()
        ),
    );
    let every = Duration::from_secs(cli.stats);
    let mut next_stats = Instant::now() + every;
    loop {
        match sys::wait_signal(&sys::HANDLED_SIGNALS, engine::TICK) {
            Ok(Some(libc::SIGINT)) | Ok(Some(libc::SIGTERM)) => break,
            Ok(Some(libc::SIGUSR1)) => report(&tun, "stats", cli.stats_json),
            Ok(Some(libc::SIGHUP)) => reload_key(&mut tun, &cli.key_file, max_age),
            Ok(_) => {}
            Err(e) => {
                error!("waiting for signals: {e}");
                break;
            }
        }
        tun.tick();
        if cli.stats > 0 && Instant::now() >= next_stats {
            report(&tun, "stats", cli.stats_json);
            next_stats = Instant::now() + every;
        }
    }
    notify(&notifier, "STOPPING=1");
    report(&tun, &format!("stopping {}", tun.name()), cli.stats_json);
    if let Some(cmd) = down {
        match run_hook(&tun, "down", cmd, Some(DOWN_HOOK_LIMIT)) {
            Ok(HookEnd::Exited(st)) if st.success() => info!("--down hook done"),
            Ok(HookEnd::Exited(st)) => warn!("--down hook `{cmd}` failed ({st})"),
            Ok(HookEnd::Interrupted(sig)) => warn!("--down hook killed by signal {sig}"),
            Ok(HookEnd::TimedOut) => {
                warn!("--down hook killed after {} s", DOWN_HOOK_LIMIT.as_secs())
            }
            Err(e) => warn!("--down hook `{cmd}`: cannot run /bin/sh: {e}"),
        }
    }
    // Exiting closes the TAP descriptor, which removes the interface.
    ExitCode::SUCCESS
}
