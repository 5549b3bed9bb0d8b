//! What the package ships agrees with the binary and with itself: the
//! bash, zsh and fish completions offer exactly the options of
//! `taptun --help` and `taptun status --help` and parse in their shells;
//! `--help`, the man page and the unit's comment name no source-tree path;
//! every relative Markdown link (and its #anchor) in README.md and docs/
//! resolves, in the checkout and, in `e2e_deb_docs_links_resolve`, in the
//! tree the .deb installs.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options the completions offer that `taptun --help` does not list yet:
/// `--config` (branch conf) and `--fwmark` (branch route) of issue #22.
/// Empty this list once both are merged (the test says so when one is in
/// `--help` and still here).
const PENDING: &[&str] = &[];

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(manifest().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn help(args: &[&str]) -> String {
    let (ok, out) = run(TAPTUN, args);
    assert!(ok, "taptun {args:?}: {out}");
    out
}

/// Every `--long-option` token in `text`.
fn long_options(text: &str) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(off) = text[i..].find("--") {
        let start = i + off;
        let mut end = start + 2;
        while end < b.len() && (b[end].is_ascii_lowercase() || b[end] == b'-') {
            end += 1;
        }
        let before_ok =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'-');
        if before_ok && end > start + 2 && b[start + 2] != b'-' {
            set.insert(text[start..end].trim_end_matches('-').to_string());
        }
        i = end.max(start + 2);
    }
    set
}

/// The options `taptun --help` lists (its Options section), and
/// `--version`, which it names in its notes.
fn help_options() -> BTreeSet<String> {
    let out = help(&["--help"]);
    let mut set = options_section(&out);
    assert!(
        out.contains("--version"),
        "--help does not name --version:\n{out}"
    );
    set.insert("--version".into());
    set
}

/// What the completions must offer for `taptun hub --`: its Options section.
fn expected_hub() -> BTreeSet<String> {
    options_section(&help(&["hub", "--help"]))
}

/// The long options of a --help text's Options section.
fn options_section(out: &str) -> BTreeSet<String> {
    let section = out
        .split("\nOptions:\n")
        .nth(1)
        .and_then(|s| s.split("\n\n").next())
        .unwrap_or_else(|| panic!("no Options section in --help:\n{out}"));
    section
        .lines()
        // An option's own line starts with it after two spaces; wrapped help
        // text is indented further.
        .filter(|l| l.starts_with("  -"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--")))
        .map(str::to_string)
        .collect()
}

/// What the completions must offer for `taptun --`.
fn expected_main() -> BTreeSet<String> {
    let mut want = help_options();
    for p in PENDING {
        assert!(
            !want.contains(*p),
            "{p} is in taptun --help now: remove it from PENDING in tests/package.rs"
        );
        want.insert(p.to_string());
    }
    want
}

/// What the completions must offer for `taptun status --`.
fn expected_status() -> BTreeSet<String> {
    let out = help(&["status", "--help"]);
    let usage = out.lines().next().unwrap_or_default();
    let mut want = long_options(usage);
    want.insert("--help".into());
    want
}

/// Like TAPTUN_E2E=require for the shells: missing is a failure there,
/// a note elsewhere.
fn shell_present(shell: &str) -> bool {
    if installed(shell) {
        return true;
    }
    if std::env::var("TAPTUN_E2E").as_deref() == Ok("require") {
        panic!("{shell} is not installed (sh dev/deps.sh installs it)");
    }
    eprintln!("SKIPPED the {shell} checks: {shell} is not installed");
    false
}

/// The words bash's completion offers for `words`, the last being completed.
fn bash_offers(words: &[&str]) -> BTreeSet<String> {
    let file = manifest().join("dist/completions/taptun.bash");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; _taptun; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display(),
        quoted.join(" "),
        words.len() - 1
    );
    let (ok, out) = run("bash", &["-c", &script]);
    assert!(ok, "bash completion: {out}");
    out.lines().map(str::to_string).collect()
}

/// The words fish's completion offers for the command line `line`.
fn fish_offers(line: &str) -> BTreeSet<String> {
    let file = manifest().join("dist/completions/taptun.fish");
    let script = format!("source '{}'; complete -C'{line}'", file.display());
    let (ok, out) = run("fish", &["--no-config", "-c", &script]);
    assert!(ok, "fish completion: {out}");
    out.lines()
        .filter_map(|l| l.split('\t').next())
        .map(str::to_string)
        .collect()
}

/// The long options in the zsh completion's array `name=( ... )`.
fn zsh_array(name: &str) -> BTreeSet<String> {
    let text = read("dist/completions/taptun.zsh");
    let start = format!("{name}=(");
    let body = text
        .split(&start)
        .nth(1)
        .and_then(|s| s.split("\n    )").next())
        .unwrap_or_else(|| panic!("no {start} in taptun.zsh"));
    long_options(body)
}

fn only_long(set: BTreeSet<String>) -> BTreeSet<String> {
    set.into_iter().filter(|w| w.starts_with("--")).collect()
}

#[test]
fn bash_completion_offers_every_option_and_subcommand() {
    assert_eq!(only_long(bash_offers(&["taptun", "--"])), expected_main());
    assert_eq!(
        only_long(bash_offers(&["taptun", "status", "--"])),
        expected_status()
    );
    assert_eq!(
        only_long(bash_offers(&["taptun", "hub", "--"])),
        expected_hub()
    );
    let first = bash_offers(&["taptun", ""]);
    for sub in ["genkey", "status", "hub"] {
        assert!(first.contains(sub), "no {sub} in {first:?}");
    }
    let (ok, out) = run("bash", &["-n", "dist/completions/taptun.bash"]);
    assert!(ok, "{out}");
}

#[test]
fn fish_completion_offers_every_option_and_subcommand() {
    if !shell_present("fish") {
        return;
    }
    let file = manifest().join("dist/completions/taptun.fish");
    let (ok, out) = run("fish", &["--no-execute", file.to_str().unwrap()]);
    assert!(ok, "fish --no-execute: {out}");
    assert_eq!(fish_offers("taptun --"), expected_main());
    assert_eq!(fish_offers("taptun status --"), expected_status());
    assert_eq!(fish_offers("taptun hub --"), expected_hub());
    let first = fish_offers("taptun ");
    for sub in ["genkey", "status", "hub"] {
        assert!(first.contains(sub), "no {sub} in {first:?}");
    }
}

#[test]
fn zsh_completion_offers_every_option_and_subcommand() {
    if !shell_present("zsh") {
        return;
    }
    let file = manifest().join("dist/completions/taptun.zsh");
    let (ok, out) = run("zsh", &["-n", file.to_str().unwrap()]);
    assert!(ok, "zsh -n: {out}");
    assert_eq!(zsh_array("opts"), expected_main());
    assert_eq!(zsh_array("status_opts"), expected_status());
    assert_eq!(zsh_array("hub_opts"), expected_hub());
    let text = read("dist/completions/taptun.zsh");
    for sub in ["genkey\\:", "status\\:", "hub\\:"] {
        assert!(text.contains(sub), "no subcommand {sub} in taptun.zsh");
    }
}

/// The paths of the source tree that an installed text sends a reader to
/// (`dist/…`, `docs/…` not under /usr/share/doc/taptun/, ...).
fn source_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for dir in ["dist/", "src/", "scripts/", "dev/", "tests/", "docs/"] {
        for (i, _) in text.match_indices(dir) {
            // Part of a longer path (/usr/share/doc/taptun/docs/…) or word.
            let prev = text[..i].chars().next_back();
            if prev.is_some_and(|c| c.is_alphanumeric() || "/-_.".contains(c)) {
                continue;
            }
            let end = text[i..]
                .find(|c: char| c.is_whitespace())
                .map_or(text.len(), |e| i + e);
            found.push(text[i..end].to_string());
        }
    }
    found
}

#[test]
fn help_and_man_page_name_the_subcommands_and_no_source_path() {
    let out = help(&["--help"]);
    for want in ["taptun genkey", "taptun status", "--version"] {
        assert!(out.contains(want), "--help does not name {want}:\n{out}");
    }
    assert_eq!(source_paths(&out), Vec::<String>::new(), "in --help");
    let man = read("dist/taptun.1");
    assert_eq!(source_paths(&man), Vec::<String>::new(), "in dist/taptun.1");
    // Every option of --help is in the man page, as groff writes it.
    for opt in help_options() {
        let roff = opt.replace('-', "\\-");
        assert!(man.contains(&roff), "the man page lacks {opt}");
    }
    // And every option of `taptun hub --help`, in its HUB section.
    let hub = man
        .split(".SH HUB")
        .nth(1)
        .and_then(|s| s.split("\n.SH ").next())
        .expect("the man page has no HUB section");
    for opt in expected_hub() {
        let roff = opt.replace('-', "\\-");
        assert!(
            hub.contains(&roff),
            "the man page's HUB section lacks {opt}"
        );
    }
    assert_eq!(
        source_paths(&help(&["hub", "--help"])),
        Vec::<String>::new(),
        "in hub --help"
    );
    for want in [
        "unknown_session",
        "wrong_mode",
        "taptun genkey",
        "taptun status",
        "\\-\\-cipher",
        "The configuration must change",
        "The environment must change",
    ] {
        assert!(man.contains(want), "the man page lacks {want}");
    }
    // The status report's mode line, as the code writes it.
    let mode = "mode: authenticated, not encrypted (tinytaptunnel HMAC wire)";
    assert!(man.contains(mode), "the man page lacks {mode:?}");
    let code = read("src/engine/status.rs");
    assert!(
        code.contains("\"  mode: {}\"") && code.contains(&mode[6..]),
        "src/engine/status.rs no longer writes {mode:?}: update the man page"
    );
    for reason in taptun::stats::DropReason::ALL {
        assert!(
            man.contains(reason.name()),
            "the man page lacks {}",
            reason.name()
        );
    }
}

#[test]
fn unit_comment_names_installed_docs() {
    let unit = read("dist/systemd/taptun@.service");
    for (i, _) in unit.match_indices("docs/") {
        let doc = "/usr/share/doc/taptun/";
        assert!(
            unit[..i].ends_with(doc),
            "the unit names a source-tree path: {}",
            &unit[i.saturating_sub(30)..(i + 30).min(unit.len())]
        );
        let name: String = unit[i..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != ')' && *c != ',')
            .collect();
        let name = name
            .split('#')
            .next()
            .unwrap_or_default()
            .trim_end_matches('.');
        assert!(
            manifest().join(name).is_file(),
            "the unit names {doc}{name}, which is not a doc"
        );
    }
}

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_`
/// dropped, spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The lines of a Markdown text outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The anchors of a Markdown file's headings.
fn anchors(text: &str) -> BTreeSet<String> {
    prose(text)
        .iter()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| slug(h.trim_start_matches('#')))
        .collect()
}

/// The targets of a Markdown text's inline links `[..](target)`, outside
/// code blocks and code spans.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        // Code spans hold examples, not links.
        let line: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect();
        for (i, _) in line.match_indices("](") {
            let rest = &line[i + 2..];
            if let Some(end) = rest.find(')') {
                out.push(rest[..end].trim().to_string());
            }
        }
    }
    out
}

/// Every relative link of every `*.md` under `root` (recursively) that
/// does not resolve to a file under `root`, or to a heading of it.
fn broken_links(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                files.push(p);
            }
        }
    }
    assert!(
        !files.is_empty(),
        "no Markdown file under {}",
        root.display()
    );
    let root = root.canonicalize().unwrap();
    let mut broken = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let dest: PathBuf = if path.is_empty() {
                f.clone()
            } else {
                f.parent().unwrap().join(path)
            };
            let where_ = format!(
                "{}: ({target})",
                f.strip_prefix(&root).unwrap_or(f).display()
            );
            match dest.canonicalize() {
                Ok(d) if d.starts_with(&root) && d.is_file() => {
                    if !anchor.is_empty() {
                        let t = fs::read_to_string(&d).unwrap_or_default();
                        if !anchors(&t).contains(anchor) {
                            broken.push(format!("{where_}: no heading #{anchor}"));
                        }
                    }
                }
                _ => broken.push(format!("{where_}: no such file in the tree")),
            }
        }
    }
    broken
}

#[test]
fn markdown_links_resolve_in_the_checkout() {
    // README.md and docs/ as the checkout has them (the top folder holds
    // only README.md of the Markdown files, besides docs/).
    let tmp = TempDir::new("taptun-links-");
    fs::copy(manifest().join("README.md"), tmp.join("README.md")).unwrap();
    fs::copy(manifest().join("LICENSE"), tmp.join("LICENSE")).unwrap();
    fs::create_dir(tmp.join("docs")).unwrap();
    for e in fs::read_dir(manifest().join("docs")).unwrap().flatten() {
        fs::copy(e.path(), tmp.join("docs").join(e.file_name())).unwrap();
    }
    assert_eq!(broken_links(&tmp), Vec::<String>::new());
}

#[test]
fn e2e_deb_docs_links_resolve() {
    require_e2e!();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has_deb = Command::new(&cargo)
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_deb,
        "cargo-deb is not installed (sh dev/deps.sh installs it)"
    );
    let out_dir = TempDir::new("taptun-deb-");
    let deb = build_deb(&out_dir);
    let root = out_dir.join("root");
    sh(&format!(
        "dpkg-deb -x '{}' '{}'",
        deb.display(),
        root.display()
    ));
    let doc = root.join("usr/share/doc/taptun");
    for d in fs::read_dir(manifest().join("docs")).unwrap().flatten() {
        let installed = doc.join("docs").join(d.file_name());
        assert!(
            installed.is_file(),
            "{} is not installed",
            installed.display()
        );
    }
    assert_eq!(
        broken_links(&doc),
        Vec::<String>::new(),
        "in the .deb's docs"
    );
    // The completions land where each shell looks.
    for p in [
        "usr/share/bash-completion/completions/taptun",
        "usr/share/zsh/vendor-completions/_taptun",
        "usr/share/fish/vendor_completions.d/taptun.fish",
    ] {
        assert!(root.join(p).is_file(), "{p} is not in the .deb");
    }
    // What the scripts run: ip always, iptables for NAT and proxy ARP.
    let field = |f: &str| sh(&format!("dpkg-deb -f '{}' {f}", deb.display()));
    assert!(field("Depends").contains("iproute2"), "Depends");
    assert!(field("Recommends").contains("iptables"), "Recommends");
}
