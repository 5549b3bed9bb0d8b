//! The binary's command-line behaviour: messages and exit codes. No root needed.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const TAPTUN: &str = env!("CARGO_BIN_EXE_taptun");

fn dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("taptun-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(TAPTUN).args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn version_and_help() {
    let (code, out) = run(&["--version"]);
    assert_eq!(
        (code, out.trim()),
        (0, concat!("taptun ", env!("CARGO_PKG_VERSION")))
    );
    let (code, out) = run(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--dev",
        "--mtu",
        "--address",
        "--max-age",
        "--keepalive",
        "--log-level",
        "genkey",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}:\n{out}");
    }
    let (code, out) = run(&[]);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn genkey_writes_0600_and_never_overwrites() {
    let d = dir("genkey");
    let k = d.join("k.b64");
    let (code, out) = run(&["genkey", k.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = std::fs::read_to_string(&k).unwrap();
    assert_eq!(before.trim().len(), 44);
    let (code, out) = run(&["genkey", k.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(out.contains("already exists"), "{out}");
    assert_eq!(std::fs::read_to_string(&k).unwrap(), before);
}

#[test]
fn bad_key_files_exit_2_with_one_line() {
    let d = dir("badkey");
    let cases: [(&str, &[u8], u32, &str); 4] = [
        ("empty.b64", b"\n", 0o600, "is empty"),
        ("junk.b64", b"%%% not base64 %%%", 0o600, "not valid base64"),
        (
            "short.b64",
            b"AAAAAAAAAAAAAAAAAAAA\n",
            0o600,
            "expected at least 16",
        ),
        (
            "open.b64",
            b"AAAAAAAAAAAAAAAAAAAAAA==\n",
            0o644,
            "chmod 600",
        ),
    ];
    for (name, content, mode, expect) in cases {
        let p = d.join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, out) = run(&[p.to_str().unwrap(), "127.0.0.1:0"]);
        assert_eq!(code, 2, "{name}: {out}");
        assert!(out.contains(expect) && out.contains(name), "{name}: {out}");
        assert_eq!(
            out.trim().lines().count(),
            1,
            "{name}: more than one line: {out}"
        );
    }
}

#[test]
fn bad_arguments_name_the_value() {
    let d = dir("args");
    let k = d.join("k.b64");
    let k = k.to_str().unwrap();
    let (code, out) = run(&[k, "9123"]);
    assert_eq!(code, 2);
    assert!(
        out.contains("\"9123\"") && out.contains("HOST:PORT"),
        "{out}"
    );
    let (code, out) = run(&[k, ":9123", "--address", "10.0.0.1"]);
    assert_eq!(code, 2);
    assert!(out.contains("10.0.0.1"), "{out}");
    // A local name must resolve; a peer name need not (it is retried).
    let (code, out) = run(&[k, "no-such-host.invalid:9123"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot resolve"), "{out}");
}

#[test]
fn port_in_use_exits_1_and_says_so() {
    let d = dir("port");
    let k = d.join("k.b64");
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (code, out) = run(&[k.to_str().unwrap(), &addr]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot bind UDP") && out.contains("another process uses this port"),
        "{out}"
    );
    // The key was created on the way, with a note saying so.
    assert!(out.contains("created a new key"), "{out}");
}

/// Runs taptun; its exit code, stdout and stderr.
fn run3(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// True when this process runs as root (which ignores directory modes).
fn root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0")
}

/// Every error a newcomer met: one line on stderr, nothing on stdout, the
/// documented exit status, and the words that say what to change.
#[test]
fn every_error_is_one_line_on_stderr_with_its_status() {
    let d = dir("table");
    let key = d.join("k.b64");
    let k = key.to_str().unwrap();
    // A directory where a missing key cannot be created: mode 0555 and,
    // since root ignores that, run as nobody (uid 65534) when root.
    let ro = d.join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ro_key = ro.join("k.b64");
    let conf = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let c_unknown = conf("unknown.conf", "# x\nkey = /k\nmtuu = 1400\n");
    let c_value = conf("value.conf", "mtu = abc\n");
    let c_twice = conf("twice.conf", "dev = a\n\ndev = b\n");
    let c_no_eq = conf("noeq.conf", "key = /k\nno-offload\n");
    let c_old_args = conf("oldargs.conf", "KEY=/k\nARGS=-i tap1 --stats-json\n");
    let c_old_args2 = conf("oldargs2.conf", "# old\nARGS=-i tap1 --stats-json\n");
    let c_quote = conf("quote.conf", "up = \"echo\n");
    let c_local = conf("local.conf", "key = /k\nlocal = 9123\n");
    let c_ipv4 = conf(
        "ipv4.conf",
        &format!("key = {k}\nlocal = :1\naddress = 10.0.0.1/24\naddress = 10.0.0.2/24\n"),
    );
    let c_missing = d.join("missing.conf");
    let c_missing = c_missing.to_str().unwrap();
    let c_nolocal = conf("nolocal.conf", &format!("key = {k}\n"));
    // taptun hub --config: the same file rules with the hub's names.
    let h_unknown = conf("hub-unknown.conf", "dir = /d\nlocal = :1\nbriddge = br0\n");
    let h_p2p = conf("hub-p2p.conf", "# a tunnel's name\npeer = 192.0.2.1:9\n");
    let h_value = conf("hub-value.conf", "dir = /d\nmtu = abc\n");
    let h_nodir = conf("hub-nodir.conf", "local = :1\nbridge = br0\n");
    let cases: Vec<(Vec<&str>, i32, Vec<String>)> = vec![
        (
            vec![k, ":1", "--mtu", "abc"],
            2,
            vec!["--mtu \"abc\"".into(), "576 to 9000".into()],
        ),
        (
            vec![k, ":1", "--bogus"],
            2,
            vec!["unknown option --bogus".into()],
        ),
        (
            vec![],
            2,
            vec!["missing the key file and the local address".into()],
        ),
        (vec![k], 2, vec!["missing the local address".into()]),
        (
            vec![k, ":1", "--log-level", "loud"],
            2,
            vec!["error, warn, info, debug, trace".into()],
        ),
        (vec!["--version", "extra"], 2, vec!["\"extra\"".into()]),
        (
            vec!["genkey"],
            2,
            vec!["taptun genkey: missing FILE".into()],
        ),
        (vec!["genkey", "a", "b"], 2, vec!["\"b\"".into()]),
        (vec!["status", "a", "b"], 2, vec!["\"b\"".into()]),
        (vec!["status", "--bogus"], 2, vec!["--bogus".into()]),
        (
            vec![k, "127.0.0.1:0", "-a", "10.0.0.1/24", "-a", "10.0.0.2/24"],
            2,
            vec!["--address 10.0.0.2/24: only one IPv4".into()],
        ),
        (
            vec![k, "127.0.0.1:0", "--user", "no-such-user-taptun"],
            2,
            vec!["--user no-such-user-taptun: no such user".into()],
        ),
        (
            vec![ro_key.to_str().unwrap(), "127.0.0.1:0"],
            2,
            vec![format!("key file {}: cannot create it", ro_key.display())],
        ),
        (
            vec!["--config", &c_unknown],
            2,
            vec![format!(
                "{c_unknown}:3: unknown name \"mtuu\"; did you mean mtu?"
            )],
        ),
        (
            vec!["--config", &c_value],
            2,
            vec![format!(
                "{c_value}:1: mtu = \"abc\": expected a number from 576 to 9000"
            )],
        ),
        (
            vec!["--config", &c_twice],
            2,
            vec![format!("{c_twice}:3: dev is already set on line 1")],
        ),
        (
            vec!["--config", &c_no_eq],
            2,
            vec![format!(
                "{c_no_eq}:2: \"no-offload\": expected no-offload = true"
            )],
        ),
        (
            vec!["--config", &c_old_args],
            2,
            vec![
                format!("{c_old_args}:1: KEY= is the old EnvironmentFile format"),
                "write key = /k".into(),
            ],
        ),
        (
            vec!["--config", &c_old_args2],
            2,
            vec![
                format!("{c_old_args2}:2: ARGS= is the old"),
                "dev = tap1; stats-json = true".into(),
            ],
        ),
        (
            vec!["--config", &c_quote],
            2,
            vec![format!("{c_quote}:1: no closing double quote")],
        ),
        (
            vec!["--config", &c_local],
            2,
            vec![format!("{c_local}:2: local = \"9123\": expected :PORT")],
        ),
        (
            vec!["--config", &c_ipv4],
            2,
            vec![format!(
                "{c_ipv4}:4: address = \"10.0.0.2/24\": only one IPv4"
            )],
        ),
        (
            vec!["--config", c_missing],
            2,
            vec![format!("config file {c_missing}: cannot read it")],
        ),
        (
            vec!["--config", &c_nolocal],
            2,
            vec![format!("{c_nolocal}: missing the local address")],
        ),
        (
            vec!["hub", "--config", &h_unknown],
            2,
            vec![format!(
                "{h_unknown}:3: unknown name \"briddge\"; did you mean bridge?"
            )],
        ),
        (
            vec!["hub", "--config", &h_p2p],
            2,
            vec![format!("{h_p2p}:2: unknown name \"peer\"")],
        ),
        (
            vec!["hub", "--config", &h_value],
            2,
            vec![format!(
                "{h_value}:2: mtu = \"abc\": expected a number from 576 to 9000"
            )],
        ),
        (
            vec!["hub", "--config", &h_nodir],
            2,
            vec![format!(
                "{h_nodir}: missing the folder of the spokes' keys: give it on the command line or as dir ="
            )],
        ),
        (
            vec!["hub", "/d", ":1", "--briddge", "br0"],
            2,
            vec!["unknown option --briddge (did you mean --bridge?)".into()],
        ),
        (
            vec!["hub", "/nonexistent-taptun-spokes", ":1"],
            2,
            vec!["spoke folder /nonexistent-taptun-spokes: No such file or directory".into()],
        ),
    ];
    let mut failures = Vec::new();
    for (args, want_code, wants) in &cases {
        let mut cmd = if root() && args.first() == Some(&ro_key.to_str().unwrap()) {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                TAPTUN,
            ]);
            c
        } else {
            Command::new(TAPTUN)
        };
        let (code, out, err) = run3(cmd.args(args));
        let lines = err.lines().count();
        if code != *want_code
            || !out.is_empty()
            || lines != 1
            || !wants.iter().all(|w| err.contains(w.as_str()))
        {
            failures.push(format!(
                "{args:?}: exit {code} (want {want_code}), {lines} lines on stderr, stdout {out:?}\n  stderr: {err}  want: {wants:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Refused before anything was opened or created.
    assert!(!key.exists(), "the key file was created");
    assert!(!ro_key.exists());
}

/// Under systemd (stderr is the stream `JOURNAL_STREAM` names) the journal
/// stamps each line, so taptun's own timestamp goes; elsewhere it stays.
#[test]
fn no_second_timestamp_in_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let d = dir("journal");
    let two_ipv4 = ["k", ":1", "-a", "10.0.0.1/24", "-a", "10.0.0.2/24"];
    let line = |stream: Option<&str>, file: &std::path::Path| {
        let err = std::fs::File::create(file).unwrap();
        let mut cmd = Command::new(TAPTUN);
        cmd.args(two_ipv4).stderr(err).env_remove("JOURNAL_STREAM");
        if let Some(s) = stream {
            cmd.env("JOURNAL_STREAM", s);
        }
        let st = cmd.status().unwrap();
        assert_eq!(st.code(), Some(2));
        std::fs::read_to_string(file).unwrap()
    };
    let file = d.join("err");
    std::fs::File::create(&file).unwrap();
    let meta = std::fs::metadata(&file).unwrap();
    let journal = line(Some(&format!("{}:{}", meta.dev(), meta.ino())), &file);
    assert!(journal.starts_with("ERROR "), "{journal:?}");
    let other = line(Some("1:2"), &d.join("err2"));
    let plain = line(None, &d.join("err3"));
    for text in [other, plain] {
        assert!(text.starts_with("20"), "a timestamp first: {text:?}");
        assert_eq!(text.lines().count(), 1, "{text:?}");
    }
    let _ = std::fs::remove_dir_all(d);
}
