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
