use super::*;
use crate::offload::testutil::XorShift;

fn pairs(settings: &[Setting]) -> Vec<(String, String)> {
    settings
        .iter()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect()
}

fn ok(text: &str) -> Vec<(String, String)> {
    pairs(&parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?}: {e}")))
}

fn err(text: &str) -> ConfError {
    match parse(text.as_bytes()) {
        Ok(s) => panic!("{text:?} accepted: {s:?}"),
        Err(e) => e,
    }
}

fn p(name: &str, value: &str) -> (String, String) {
    (name.to_string(), value.to_string())
}

#[test]
fn lines_comments_quotes() {
    let text = "\u{feff}# taptun@home\n\
                \n\
                key = /etc/taptun/home.key\n\
                \tlocal=:9123   # every address\r\n\
                peer =\n\
                dev = tap-home\n\
                address = 10.1.2.1/24\n\
                address = fd00::1/64\n\
                no-offload = yes\n\
                stats-json = false\n\
                up = \"ip link set \\\"$TAPTUN_DEV\\\" master br0 # not a comment\" # a comment\n\
                down = printf '%s\\n' \"$TAPTUN_DEV\"\n\
                user = \"  x  \"\n";
    assert_eq!(
        ok(text),
        [
            p("key", "/etc/taptun/home.key"),
            p("local", ":9123"),
            p("peer", ""),
            p("dev", "tap-home"),
            p("address", "10.1.2.1/24"),
            p("address", "fd00::1/64"),
            p("no-offload", "yes"),
            p("stats-json", "false"),
            p(
                "up",
                "ip link set \"$TAPTUN_DEV\" master br0 # not a comment"
            ),
            p("down", "printf '%s\\n' \"$TAPTUN_DEV\""),
            p("user", "  x  "),
        ]
    );
    let s = parse(text.as_bytes()).unwrap();
    assert_eq!((s[0].line, s[1].line, s[10].line), (3, 4, 13));
    assert_eq!(ok(""), []);
    assert_eq!(ok("\n\n# only comments\n   # indented\n"), []);
    // `quote` writes what `parse` reads back.
    for v in ["a\\", "\\\"", " # x ", "\\\\", "\"x\"", "\ta", ""] {
        let line = format!("up = {}\n", quote(v));
        assert_eq!(ok(&line), [p("up", v)], "{line:?}");
    }
    // Backslashes other than \" and \\ stay as they are.
    assert_eq!(ok(r#"up = "a\nb\\c\"""#), [p("up", r#"a\nb\c""#)]);
}

#[test]
fn each_error_names_its_line() {
    let cases: [(&str, usize, &str); 15] = [
        (
            "mtu = 1400\n\nmtuu = 3\n",
            3,
            "unknown name \"mtuu\"; did you mean mtu?",
        ),
        ("frobnicate = 1\n", 1, "taptun.conf(5)"),
        (
            "# x\nmtu = abc\n",
            2,
            "mtu = \"abc\": expected a number from 576 to 9000",
        ),
        (
            "mtu = 1400\nmtu=1400\n",
            2,
            "mtu is already set on line 1; give it once (only address may repeat)",
        ),
        ("key = a\nkey = b\n", 2, "key is already set on line 1"),
        ("no-offload\n", 1, "expected no-offload = true"),
        ("dev tap0\n", 1, "expected dev = VALUE"),
        ("just words\n", 1, "expected name = value"),
        ("up = \"abc\n", 1, "no closing double quote"),
        ("up = \"abc\" def\n", 1, "after the closing quote"),
        ("no-offload = maybe\n", 1, "expected true, false, yes or no"),
        ("config = x\n", 1, "config cannot be set in a config file"),
        ("local = 9123\n", 1, "local = \"9123\": expected :PORT"),
        (
            "log-level = loud\n",
            1,
            "expected error, warn, info, debug, trace or off",
        ),
        (
            "address = 10.0.0.1/24\naddress = fd00::1/64\naddress = 10.0.0.2/24\n",
            3,
            "address = \"10.0.0.2/24\": only one IPv4 address can be set",
        ),
    ];
    for (text, line, want) in cases {
        let e = err(text);
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.message.contains(want), "{text:?}: {e}");
        assert!(!e.message.contains('\n'), "{text:?}: {e}");
    }
    assert_eq!(err("a = \"\x01\"\n").line, 1);
    let e = parse(b"mtu = 1400\n\xff\n").unwrap_err();
    assert!(e.line == 2 && e.message.contains("UTF-8"), "{e}");
}

#[test]
fn old_environment_file_says_how_to_write_it_now() {
    let e = err("# old\nKEY=/etc/taptun/home.key\nLOCAL=:9123\n");
    assert_eq!(e.line, 2);
    assert!(
        e.message.contains("old EnvironmentFile format")
            && e.message.contains("write key = /etc/taptun/home.key"),
        "{e}"
    );
    let e = err("ARGS=-i tap-home -a 10.1.2.1/24 --stats 3600 --stats-json\n");
    assert!(
        e.message
            .contains("dev = tap-home; address = 10.1.2.1/24; stats = 3600; stats-json = true"),
        "{e}"
    );
    let e = err("ARGS=--no-such-thing\n");
    assert!(e.message.contains("name = value without the dashes"), "{e}");
    let e = err("PEER=\n");
    assert!(e.message.contains("leave it out"), "{e}");
    let e = err("UP=/etc/taptun/home up\n");
    assert!(e.message.contains("write up = /etc/taptun/home up"), "{e}");
}

#[test]
fn every_long_option_of_help_is_a_name_and_nothing_else() {
    // --help as argh prints it: the names cannot drift from the options.
    let help = crate::cli::parse(&["--help"]).unwrap_err().output;
    let options = help.split("\nOptions:\n").nth(1).unwrap();
    let options = options.split("\n\n").next().unwrap();
    let mut from_help: Vec<&str> = options
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches(',').strip_prefix("--"))
        .filter(|w| !w.is_empty() && !["help", "config"].contains(w))
        .collect();
    from_help.sort();
    from_help.dedup();
    let names = cli::config_names();
    let mut options: Vec<&str> = names
        .iter()
        .filter(|(_, k)| !matches!(k, Kind::Positional(_)))
        .map(|(n, _)| *n)
        .collect();
    options.sort();
    assert_eq!(options, from_help);
    let positionals: Vec<&str> = names
        .iter()
        .filter(|(_, k)| matches!(k, Kind::Positional(_)))
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(positionals, ["key", "local", "peer"]);
    let kind = |n: &str| names.iter().find(|(m, _)| *m == n).map(|(_, k)| *k);
    assert_eq!(kind("address"), Some(Kind::Repeated));
    assert_eq!(kind("no-offload"), Some(Kind::Switch));
    assert_eq!(kind("stats-json"), Some(Kind::Switch));
    assert_eq!(kind("mtu"), Some(Kind::Value));
    // Every option can be set: a valid value for each is accepted (all
    // in one file but rt-priority, which goes with neither nice nor
    // busy-poll: alone in another).
    let mut file = String::new();
    for (name, kind) in &names {
        let value = match (*name, kind) {
            ("rt-priority", _) => continue,
            (_, Kind::Switch) => "true",
            ("key", _) => "/k",
            ("local" | "peer", _) => "192.0.2.1:9",
            _ => sample(name),
        };
        file.push_str(&format!("{name} = {}\n", quote(value)));
    }
    assert_eq!(ok(&file).len(), names.len() - 1, "{file}");
    let rt = format!(
        "key = /k\nlocal = :9\nrt-priority = {}\n",
        sample("rt-priority")
    );
    assert_eq!(ok(&rt).len(), 3, "{rt}");
}

/// A valid value for each option (the test of all names above fails
/// when a new option has none here).
fn sample(name: &str) -> &'static str {
    match name {
        "dev" => "tap0",
        "mtu" => "1400",
        "underlay-mtu" => "1500",
        "address" => "10.0.0.1/24",
        "max-age" => "3.5",
        "keepalive" => "25",
        "sockbuf" => "212992",
        "clamp-mss" => "auto",
        "aqm" => "0.5/5",
        "busy-poll" => "50",
        "nice" => "-5",
        "rt-priority" => "1",
        "fq" => "off",
        "cipher" => "aes-256-gcm",
        "mac" => "02:00:00:00:00:01",
        "status-socket" => "/run/x.sock",
        "state" => "/var/lib/taptun/home/peer.state",
        "log-level" => "debug",
        "user" => "nobody",
        "up" | "down" => "ip link set \"$TAPTUN_DEV\" up # x",
        "stats" => "60",
        "resolve-every" => "30",
        "fwmark" => "0xca6c",
        _ => "",
    }
}

#[test]
fn close_names_suggest_typos_only() {
    let known = ["mtu", "underlay-mtu", "max-age", "keepalive", "no-offload"];
    let close = |g: &str| close_names(g, known.iter().copied());
    assert_eq!(close("mtuu"), ["mtu"]);
    assert_eq!(close("--keepalve"), ["keepalive"]);
    assert_eq!(close("max_age"), ["max-age"]);
    assert_eq!(close("MTU"), ["mtu"]);
    assert!(close("frobnicate").is_empty());
}

/// Random text for values: the characters the syntax treats specially.
fn text(rng: &mut XorShift) -> String {
    const PIECES: [&str; 14] = [
        " ", "\t", "#", "\"", "\\", "=", "a", "Z", "é", "$X", "'", "\\\"", "1", "-",
    ];
    (0..rng.below(8))
        .map(|_| PIECES[rng.below(PIECES.len())])
        .collect()
}

/// One random line: mostly valid settings, some comments, blank lines
/// and mistakes.
fn line(rng: &mut XorShift, names: &[(&'static str, Kind)]) -> String {
    match rng.below(10) {
        0 => format!("# {}", text(rng)),
        1 => String::new(),
        2 => text(rng),
        _ => {
            let (name, kind) = names[rng.below(names.len())];
            let value = match (kind, rng.below(4)) {
                (_, 0) => text(rng),
                (Kind::Switch, _) => ["true", "false", "yes", "no"][rng.below(4)].to_string(),
                (Kind::Positional(_), _) => ["/k", ":9", "192.0.2.1:9", ""][rng.below(4)].into(),
                _ if sample(name).is_empty() => text(rng),
                _ => sample(name).to_string(),
            };
            // Quoted as a person would, independently of `quote`.
            let value = match rng.below(3) {
                0 => format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\"")),
                _ => value,
            };
            let sep = [" = ", "=", " =\t", "  =  "][rng.below(4)];
            let comment = ["", " # c", "#", "\r"][rng.below(4)];
            format!("{name}{sep}{value}{comment}")
        }
    }
}

#[test]
fn property_accepted_files_render_back_to_the_same_settings() {
    let names = cli::config_names();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for round in 0..3000 {
        let n = rng.below(6);
        let file: Vec<String> = (0..n).map(|_| line(&mut rng, &names)).collect();
        let mut bytes = file.join("\n").into_bytes();
        if round % 3 == 0 && !bytes.is_empty() {
            // A few random bytes changed: never a panic.
            for _ in 0..=rng.below(3) {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
            }
        }
        let Ok(settings) = parse(&bytes) else {
            continue;
        };
        accepted += 1;
        let rendered = render(&settings);
        let again = parse(rendered.as_bytes())
            .unwrap_or_else(|e| panic!("{rendered:?} (from {bytes:?}): {e}"));
        assert_eq!(pairs(&again), pairs(&settings), "{rendered:?}");
        assert_eq!(render(&again), rendered);
    }
    // The generator must reach the interesting side too.
    assert!(accepted > 600, "only {accepted} of 3000 files accepted");
}

#[test]
fn property_arbitrary_bytes_never_panic() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    // Pieces of the syntax, names, multi-byte characters (whole and cut)
    // and single random bytes.
    const PIECES: [&[u8]; 18] = [
        b"=",
        b"#",
        b"\"",
        b"\\",
        b" ",
        b"\t",
        b"\r",
        b"\n",
        b"mtu",
        b"up",
        b"key",
        b"no-offload",
        "é".as_bytes(),
        "€".as_bytes(),
        b"\xe2\x82",
        b"\xff",
        b"1400",
        b"\0",
    ];
    for _ in 0..20000 {
        let mut bytes = Vec::new();
        for _ in 0..rng.below(24) {
            match rng.below(4) {
                0 => bytes.push(rng.next() as u8),
                _ => bytes.extend_from_slice(PIECES[rng.below(PIECES.len())]),
            }
        }
        if let Err(e) = parse(&bytes) {
            assert!(!e.message.contains('\n'), "{bytes:?}: {e}");
            let lines = bytes.iter().filter(|&&b| b == b'\n').count() + 1;
            assert!(e.line >= 1 && e.line <= lines, "{bytes:?}: {e}");
        }
    }
}

#[test]
fn the_shipped_example_parses() {
    let example = include_bytes!("../../dist/taptun.conf.example");
    let s = pairs(&parse(example).unwrap_or_else(|e| panic!("taptun.conf.example:{e}")));
    assert!(s.contains(&p("key", "/etc/taptun/home.key")), "{s:?}");
    assert!(s.contains(&p("local", ":9123")), "{s:?}");
    // The commented-out hook, uncommented, is one command.
    let up = String::from_utf8_lossy(example)
        .lines()
        .find_map(|l| l.strip_prefix("#up = "))
        .map(|v| format!("up = {v}\n"))
        .unwrap();
    assert_eq!(
        ok(&up),
        [p(
            "up",
            "/usr/share/taptun/l2_bridge_up.sh tap-home eth0 br0"
        )]
    );
}
