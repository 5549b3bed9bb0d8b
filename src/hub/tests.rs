//! The hub's threads and loops on in-memory I/O (`engine/mem.rs`), without
//! root: two and more spokes, each a pure [`Session`] the test drives
//! over the in-memory network, through one hub.

use super::*;
use crate::addr::parse_local;
use crate::engine::mem::{MemNet, MemSocket, MemTap};
use crate::offload::VnetHdr;
use crate::session::{Flushed, Session, Taught, Transmit};
use crate::stats::DropReason;
use status::Form;
use std::time::Instant;

const HUB: &str = "192.0.2.1:9123";
const KEY_A: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
const KEY_B: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn key(b64: &str) -> Key {
    Key::parse(b64, Path::new("test key")).expect("key")
}

fn config(state: Option<PathBuf>) -> HubConfig {
    HubConfig {
        dir: PathBuf::from("/nonexistent"),
        local: parse_local(":9123").expect("local"),
        bridge: None,
        mtu: 1418,
        path_payload: 1472,
        cipher: None,
        clamp_mss: ClampMss::Off,
        aqm: Some(crate::codel::Params::DEFAULT),
        priority: Default::default(),
        keepalive: Duration::from_secs(25),
        max_age: Duration::from_secs(3),
        sockbuf: 0,
        offload: false,
        status_socket: None,
        state,
        up: None,
        down: None,
    }
}

/// A hub on the in-memory network with spokes `names` (keys in order),
/// started; its threads end when it is dropped.
struct MemHub(Hub<MemTap, MemSocket>);

impl Drop for MemHub {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl MemHub {
    fn new(net: &Arc<MemNet>, spokes: &[(&str, &str)], state: Option<PathBuf>) -> MemHub {
        MemHub::with(net, spokes, config(state))
    }

    fn with(net: &Arc<MemNet>, spokes: &[(&str, &str)], cfg: HubConfig) -> MemHub {
        let socket = net.bind(addr(HUB));
        let mut hub = Hub::with_io(cfg, socket, addr(HUB), false).expect("hub");
        for (name, k) in spokes {
            hub.insert(name, key(k), mem_tap()).expect("spoke");
        }
        hub.publish();
        hub.start().expect("start");
        MemHub(hub)
    }

    fn spoke(&self, name: &str) -> &Arc<Spoke<MemTap>> {
        &self.0.spokes[name].0
    }
}

fn mem_tap() -> tap::Opened<MemTap> {
    tap::Opened {
        tap: MemTap::new(1418, Vec::new(), None),
        offload: false,
        udp_coalesce: false,
    }
}

/// A spoke: a whole session on its own socket, driven by the test.
struct TestSpoke {
    session: Session,
    socket: MemSocket,
}

impl TestSpoke {
    fn new(net: &Arc<MemNet>, at: &str, k: &str) -> TestSpoke {
        let setup = Setup {
            keying: Keying::new(&key(k), None),
            mtu: 1418,
            path: 1472,
            gso: false,
            coalesce: None,
            clamp: None,
            max_age_ns: 3_000_000_000,
            keepalive_ns: 0,
            peer: Some(addr(HUB)),
        };
        TestSpoke {
            session: Session::new(&setup),
            socket: net.bind(addr(at)),
        }
    }

    /// Sends `frame` to the hub; returns the datagrams as sent.
    fn send(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        let now = engine::unix_nanos();
        let mut sent = Vec::new();
        let sock = &self.socket;
        let mut send = |t: Transmit<'_>| {
            for m in t.messages {
                for one in m.split() {
                    sent.push(t.bytes[one.range].to_vec());
                }
            }
            let _ = sock.send_messages(t.bytes, t.messages, t.to);
            Taught::default()
        };
        let mut done = Flushed::default();
        self.session
            .push(&VnetHdr::default(), frame, now, &mut send, &mut done);
        self.session.flush(now, &mut send);
        sent
    }

    /// Frames the hub sent this spoke, until `n` came or `within` passed.
    fn frames(&mut self, n: usize, within: Duration) -> Vec<Vec<u8>> {
        let end = Instant::now() + within;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 70_000];
        while got.len() < n && Instant::now() < end {
            let Ok(r) = Socket::recv(&self.socket, &mut buf) else {
                continue;
            };
            let from = r.from.expect("from");
            self.session.receive(
                &mut buf[..r.len],
                None,
                r.ecn,
                from,
                engine::unix_nanos(),
                &mut |f: &[u8]| got.push(f.to_vec()),
            );
        }
        got
    }
}

impl TestSpoke {
    /// How many datagrams reach this spoke's socket within `within`.
    fn datagrams(&self, within: Duration) -> usize {
        let end = Instant::now() + within;
        let mut n = 0;
        let mut buf = vec![0u8; 70_000];
        while Instant::now() < end {
            if Socket::recv(&self.socket, &mut buf).is_ok_and(|r| r.from.is_some()) {
                n += 1;
            }
        }
        n
    }
}

/// An Ethernet frame (an experimental EtherType) carrying `tag`.
fn frame(tag: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, tag]);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend(std::iter::repeat_n(tag, 50));
    f
}

/// Waits (bounded) until the hub has recorded spoke `name` at `at`: the
/// receiving thread writes a frame to the TAP before it records where the
/// frame came from, so a test that saw the frame must not assume the address.
fn learns(hub: &MemHub, name: &str, at: &str) {
    let want = Some(addr(at));
    let until = Instant::now() + WAIT;
    while hub.spoke(name).peer.get() != want && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(hub.spoke(name).peer.get(), want, "spoke {name}");
}

/// `nice`: the hub's two forwarding threads start at it (raising it needs
/// no privilege); the thread that started them keeps its own.
#[test]
fn the_forwarding_threads_run_at_the_nice_value_given() {
    let net = Arc::new(MemNet::default());
    let mut cfg = config(None);
    cfg.priority = crate::priority::Priority::Nice(18);
    let ours = crate::sys::thread_nice().expect("nice");
    let hub = MemHub::with(&net, &[("a", KEY_A)], cfg);
    assert_eq!(crate::sys::thread_nice().expect("nice"), ours);
    for name in ["hub-udp-to-tap", "hub-tap-to-udp"] {
        let (found, seen) = crate::priority::thread_named(name, |n, f| n == 18 && f.is_none());
        assert!(found, "{name}: {seen:?}");
    }
    let text = status::render(&hub.0.shared, Form::Text);
    assert!(text.contains("\n  packet threads: nice 18\n"), "{text}");
    let json = status::render(&hub.0.shared, Form::Json);
    assert!(
        json.contains(r#","priority":{"asked":"nice 18","got":"nice 18"},"#),
        "{json}"
    );
}

/// `--rt-priority`: a forwarding thread under SCHED_FIFO that works more
/// than the limit (`burst.rs`) without finding its socket empty (forged
/// datagrams, faster than it checks them) goes on at the normal policy,
/// counted, and takes its priority back once the socket is empty: a
/// second flood is cut again, and the thread runs at its priority after.
/// Without the privilege the threads never ran real-time: nothing is cut.
#[test]
fn a_real_time_burst_of_the_hub_past_the_limit_goes_on_at_the_normal_policy() {
    let may = crate::priority::may_fifo();
    let net = Arc::new(MemNet::default());
    let mut cfg = config(None);
    // A priority no other test uses: the hub's thread is the one at it.
    cfg.priority = crate::priority::Priority::Fifo(8);
    let hub = MemHub::with(&net, &[("a", KEY_A)], cfg);
    let sh = &hub.0.shared;
    // From the spoke's own address, once the hub knows it: each forged
    // datagram then costs an HMAC check, slower than sending it, so that
    // a flood sent while the thread runs queues up too.
    let mut a = TestSpoke::new(&net, "198.51.100.1:9123", KEY_A);
    a.send(&frame(1));
    learns(&hub, "a", "198.51.100.1:9123");
    const N: u64 = 20_000;
    let flood = |round: u64| {
        for i in 0..N {
            let mut dg = vec![0x5au8; 1000];
            dg[..8].copy_from_slice(&(round * N + i).to_be_bytes());
            a.socket.send_to(&dg, addr(HUB)).unwrap();
        }
    };
    // Each one opens under no key: counted against the spoke.
    let handled = |n: u64| {
        let failed = || hub.spoke("a").auth_failed.load(Relaxed);
        let end = Instant::now() + Duration::from_secs(60);
        while failed() < n && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(failed(), n);
    };
    flood(0);
    handled(N);
    let first = sh.rt_cut.load(Relaxed);
    // Quiet for a moment: the socket found empty (the thread waits).
    std::thread::sleep(Duration::from_millis(50));
    flood(1);
    handled(2 * N);
    let second = sh.rt_cut.load(Relaxed);
    match may {
        true => {
            assert!(first >= 1, "the first flood was not cut");
            assert!(second > first, "not cut again: {first} then {second}");
            // The socket empty again: the thread took its priority back.
            let (back, seen) =
                crate::priority::thread_named("hub-udp-to-tap", |_, fifo| fifo == Some(8));
            assert!(back, "{seen:?}");
            let text = status::render(sh, Form::Text);
            let line = format!(
                "\n  packet threads: SCHED_FIFO priority 8, {second} bursts over 10 ms went on at the normal policy\n"
            );
            assert!(text.contains(&line), "{text}");
            let json = status::render(sh, Form::Json);
            let member = format!(
                r#","priority":{{"asked":"SCHED_FIFO priority 8","got":"SCHED_FIFO priority 8","bursts_cut":{second}}},"#
            );
            assert!(json.contains(&member), "{json}");
            let prom = status::render(sh, Form::Prometheus);
            let sample = format!("taptun_hub_rt_bursts_cut_total{{hub=\"9123\"}} {second}\n");
            assert!(prom.contains(&sample), "{prom}");
        }
        false => assert_eq!(second, 0, "never real-time, never cut"),
    }
}

/// The same bound on the hub's TAP→UDP thread: frames written to a
/// spoke's TAP faster than it seals and sends them keep it at work past
/// the limit (each turn ends with frames left); it is cut, and runs at its
/// priority again once the TAPs are empty.
#[test]
fn a_real_time_tap_flood_at_the_hub_is_cut_too() {
    let may = crate::priority::may_fifo();
    let net = Arc::new(MemNet::default());
    let mut cfg = config(None);
    // A priority no other test uses: the hub's thread is the one at it.
    cfg.priority = crate::priority::Priority::Fifo(9);
    let hub = MemHub::with(&net, &[("a", KEY_A)], cfg);
    let mut a = TestSpoke::new(&net, "198.51.100.1:9123", KEY_A);
    a.send(&frame(1));
    learns(&hub, "a", "198.51.100.1:9123");
    const N: u64 = 20_000;
    let tap = &hub.spoke("a").tap;
    let f = vec![0x5au8; 1000];
    for _ in 0..N {
        tap.inject(&f);
    }
    let sent = || hub.spoke("a").counters.tx_frames.load(Relaxed);
    let end = Instant::now() + Duration::from_secs(60);
    while sent() < N && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(sent(), N);
    let cut = hub.0.shared.rt_cut.load(Relaxed);
    match may {
        true => {
            assert!(cut >= 1, "the TAP flood was not cut");
            let (back, seen) =
                crate::priority::thread_named("hub-tap-to-udp", |_, fifo| fifo == Some(9));
            assert!(back, "{seen:?}");
        }
        false => assert_eq!(cut, 0, "never real-time, never cut"),
    }
}

#[test]
fn two_spokes_each_reach_their_own_tap_and_get_their_own_frames() {
    let net = Arc::new(MemNet::default());
    let hub = MemHub::new(&net, &[("a", KEY_A), ("b", KEY_B)], None);
    let mut a = TestSpoke::new(&net, "198.51.100.1:9123", KEY_A);
    let mut b = TestSpoke::new(&net, "203.0.113.2:4000", KEY_B);
    a.send(&frame(1));
    b.send(&frame(2));
    assert_eq!(hub.spoke("a").tap.written(1, WAIT), vec![frame(1)]);
    assert_eq!(hub.spoke("b").tap.written(1, WAIT), vec![frame(2)]);
    assert!(hub.spoke("a").tap.written(1, QUIET).is_empty());
    assert_eq!(hub.spoke("a").peer.get(), Some(addr("198.51.100.1:9123")));
    assert_eq!(hub.spoke("b").peer.get(), Some(addr("203.0.113.2:4000")));
    // Frames from each spoke's TAP go to that spoke only.
    hub.spoke("a").tap.inject(&frame(3));
    hub.spoke("b").tap.inject(&frame(4));
    assert_eq!(a.frames(1, WAIT), vec![frame(3)]);
    assert_eq!(b.frames(1, WAIT), vec![frame(4)]);
    assert!(a.frames(1, QUIET).is_empty());
    // Status: one block per spoke.
    let text = status::render(&hub.0.shared, Form::Text);
    assert!(
        text.starts_with("hub: 192.0.2.1:9123, 2 spokes\n"),
        "{text}"
    );
    let json = status::render(&hub.0.shared, Form::Json);
    assert!(json.contains("\"spokes\":[{\"name\":\"a\""), "{json}");
}

#[test]
fn a_replay_from_another_spokes_address_moves_nothing() {
    let net = Arc::new(MemNet::default());
    let hub = MemHub::new(&net, &[("a", KEY_A), ("b", KEY_B)], None);
    let mut a = TestSpoke::new(&net, "198.51.100.1:9123", KEY_A);
    let mut b = TestSpoke::new(&net, "203.0.113.2:4000", KEY_B);
    let dgs = a.send(&frame(1));
    b.send(&frame(2));
    assert_eq!(hub.spoke("a").tap.written(1, WAIT).len(), 1);
    assert_eq!(hub.spoke("b").tap.written(1, WAIT).len(), 1);
    // a's datagram again, from b's address.
    for dg in &dgs {
        b.socket.send_to(dg, addr(HUB)).expect("send");
    }
    assert!(hub.spoke("a").tap.written(1, QUIET).is_empty());
    assert!(hub.spoke("b").tap.written(1, QUIET).is_empty());
    assert_eq!(hub.spoke("a").peer.get(), Some(addr("198.51.100.1:9123")));
    assert_eq!(hub.spoke("b").peer.get(), Some(addr("203.0.113.2:4000")));
    // Refused by a's own replay window; b's key never opened it.
    let until = Instant::now() + WAIT;
    while hub.spoke("a").counters.drops(DropReason::Replay) == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(hub.spoke("a").counters.drops(DropReason::Replay), 1);
    assert_eq!(hub.spoke("b").auth_failed.load(Relaxed), 0);
    // Both still get their frames.
    hub.spoke("b").tap.inject(&frame(5));
    assert_eq!(b.frames(1, WAIT), vec![frame(5)]);
}

#[test]
fn a_spoke_that_roams_is_found_by_its_key_and_followed() {
    let net = Arc::new(MemNet::default());
    let hub = MemHub::new(&net, &[("a", KEY_A), ("b", KEY_B)], None);
    let mut a = TestSpoke::new(&net, "198.51.100.1:9123", KEY_A);
    a.send(&frame(1));
    assert_eq!(hub.spoke("a").tap.written(1, WAIT).len(), 1);
    // Its NAT rebinds: the same session from another port.
    a.socket = net.bind(addr("198.51.100.1:40000"));
    a.send(&frame(2));
    assert_eq!(hub.spoke("a").tap.written(1, WAIT), vec![frame(2)]);
    learns(&hub, "a", "198.51.100.1:40000");
    assert!(hub.0.shared.trials.load(Relaxed) >= 2);
    hub.spoke("a").tap.inject(&frame(3));
    assert_eq!(a.frames(1, WAIT), vec![frame(3)]);
}

#[test]
fn a_restarted_hub_sends_to_the_state_files_addresses_at_once() {
    let dir = std::env::temp_dir().join(format!("taptun-hub-mem-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let state = dir.join("hub.state");
    let _ = std::fs::remove_file(&state);
    let net = Arc::new(MemNet::default());
    let mut a = TestSpoke::new(&net, "198.51.100.1:9123", KEY_A);
    {
        let mut hub = MemHub::new(&net, &[("a", KEY_A)], Some(state.clone()));
        a.send(&frame(1));
        assert_eq!(hub.spoke("a").tap.written(1, WAIT).len(), 1);
        // The frame reaches the TAP before the receiving thread records
        // the address it came from: tick until a tick has seen it.
        let mut watch = Watch::default();
        let end = std::time::Instant::now() + WAIT;
        let text = loop {
            hub.0.tick(&mut watch);
            match std::fs::read_to_string(&state) {
                Ok(t) => break t,
                Err(e) if std::time::Instant::now() > end => panic!("no state file: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
            }
        };
        assert!(text.contains("a 198.51.100.1:9123\n"), "{text}");
    }
    // A new hub: before the spoke says anything, a frame for it leaves.
    let hub = MemHub::new(&net, &[("a", KEY_A)], Some(state.clone()));
    hub.spoke("a").tap.inject(&frame(7));
    assert_eq!(a.frames(1, WAIT), vec![frame(7)]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_spokes_key_rotates_alone_and_a_wrong_key_is_counted_as_its_mismatch() {
    let net = Arc::new(MemNet::default());
    let mut hub = MemHub::new(&net, &[("a", KEY_A), ("b", KEY_B)], None);
    let mut a = TestSpoke::new(&net, "198.51.100.1:9123", KEY_A);
    let mut b = TestSpoke::new(&net, "203.0.113.2:4000", KEY_B);
    a.send(&frame(1));
    b.send(&frame(2));
    assert_eq!(hub.spoke("a").tap.written(1, WAIT).len(), 1);
    assert_eq!(hub.spoke("b").tap.written(1, WAIT).len(), 1);
    // The hub takes a new key for a (SIGHUP after a.key changed); a frame
    // a sealed under the old one before it switched still passes.
    const NEW: &str = "TmV3TmV3TmV3TmV3TmV3TmV3TmV3TmV3TmV3TmV3TmU=";
    hub.0.rekey("a", key(NEW)).expect("rekey");
    a.send(&frame(3));
    assert_eq!(hub.spoke("a").tap.written(1, WAIT), vec![frame(3)]);
    // Then a switches too: the new key passes; b never noticed.
    a.session
        .rotate(&Keying::new(&key(NEW), None), engine::unix_nanos());
    a.send(&frame(4));
    b.send(&frame(5));
    assert_eq!(hub.spoke("a").tap.written(1, WAIT), vec![frame(4)]);
    assert_eq!(hub.spoke("b").tap.written(1, WAIT), vec![frame(5)]);
    hub.spoke("a").tap.inject(&frame(6));
    assert_eq!(a.frames(1, WAIT), vec![frame(6)]);
    assert_eq!(hub.spoke("a").key_rotations.load(Relaxed), 1);
    assert_eq!(hub.spoke("b").key_rotations.load(Relaxed), 0);
    // From b's address, a key no spoke has (b's host got a wrong key file):
    // nothing passes, counted as b's mismatch (its warn line), b's address
    // stays.
    let mut wrong = TestSpoke::new(
        &net,
        "192.0.2.99:1",
        "V1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1c=",
    );
    wrong.socket = net.bind(addr("203.0.113.2:4000"));
    wrong.send(&frame(7));
    let until = Instant::now() + WAIT;
    while hub.spoke("b").auth_failed.load(Relaxed) == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(hub.spoke("b").auth_failed.load(Relaxed), 1);
    assert!(hub.spoke("b").tap.written(1, QUIET).is_empty());
    assert!(hub.spoke("a").tap.written(1, QUIET).is_empty());
    assert_eq!(hub.spoke("b").peer.get(), Some(addr("203.0.113.2:4000")));
}

/// The spoke lines of the main thread: each says what it stands for since
/// the last one and the fix, at most once a minute, and only while it
/// goes on (a spoke whose clock was off and that went quiet is not named
/// again every minute).
#[test]
fn watch_lines_count_what_they_stand_for_and_stop_when_it_stops() {
    let net = Arc::new(MemNet::default());
    let hub = MemHub::new(&net, &[("b", KEY_B)], None);
    let b = hub.spoke("b");
    let list = [b];
    let (age, dir) = (Duration::from_secs(3), Path::new("/etc/taptun/hub.d"));
    let mut w = Watch::default();
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    assert!(w.lines(&list, age, dir, at(0)).is_empty());
    b.offset_ns.store(10_000_000_000, Relaxed);
    b.has_offset.store(true, Relaxed);
    b.counters.drop_n(DropReason::Future, 5);
    b.auth_failed.fetch_add(4, Relaxed);
    let lines = w.lines(&list, age, dir, at(1));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("spoke b: 4 datagrams ")
            && lines[0].contains("/etc/taptun/hub.d/b.key"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("spoke b: its clock is +10.0 s off this host's (ahead)")
            && lines[1].contains(": 5 datagrams refused")
            && lines[1].contains("--max-age 3.0 s")
            && lines[1].contains("NTP"),
        "{}",
        lines[1]
    );
    // Within the minute: held back.
    b.counters.drop_n(DropReason::Stale, 3);
    b.auth_failed.fetch_add(1, Relaxed);
    assert!(w.lines(&list, age, dir, at(2)).is_empty());
    // A minute on, nothing new: nothing said.
    assert!(w.lines(&list, age, dir, at(70)).is_empty());
    // Then more: what was held back is counted in.
    b.counters.drop_n(DropReason::Future, 2);
    b.auth_failed.fetch_add(1, Relaxed);
    let lines = w.lines(&list, age, dir, at(71));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("spoke b: 2 datagrams "),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains(": 5 datagrams refused"), "{}", lines[1]);
    // A clock within --max-age / 2 is not blamed for stale datagrams
    // (replays refused as stale carry their own, old, timestamps).
    b.offset_ns.store(1_000_000_000, Relaxed);
    b.counters.drop_n(DropReason::Stale, 1);
    assert!(w.lines(&list, age, dir, at(200)).is_empty());
}

/// SIGHUP's path in the sending thread: a spoke removed while the others
/// run (its TAP no longer read, nothing sent to it), one added (taking the
/// removed one's slot: its own TAP and address, not the old spoke's).
#[test]
fn spokes_removed_and_added_while_running_keep_their_own_frames() {
    const KEY_C: &str = "Q0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0M=";
    let net = Arc::new(MemNet::default());
    let mut hub = MemHub::new(&net, &[("a", KEY_A), ("b", KEY_B)], None);
    let mut a = TestSpoke::new(&net, "198.51.100.1:9123", KEY_A);
    let mut b = TestSpoke::new(&net, "203.0.113.2:4000", KEY_B);
    a.send(&frame(1));
    b.send(&frame(2));
    assert_eq!(hub.spoke("a").tap.written(1, WAIT).len(), 1);
    assert_eq!(hub.spoke("b").tap.written(1, WAIT).len(), 1);
    learns(&hub, "b", "203.0.113.2:4000");
    let old_a = hub.spoke("a").clone();
    hub.0.spokes.remove("a");
    hub.0.publish();
    hub.0.insert("c", key(KEY_C), mem_tap()).expect("spoke c");
    hub.0.publish();
    let mut c = TestSpoke::new(&net, "192.0.2.77:5000", KEY_C);
    c.send(&frame(3));
    assert_eq!(hub.spoke("c").tap.written(1, WAIT), vec![frame(3)]);
    learns(&hub, "c", "192.0.2.77:5000");
    hub.spoke("c").tap.inject(&frame(4));
    assert_eq!(c.frames(1, WAIT), vec![frame(4)]);
    // The sending thread has seen the set without a: a's TAP is not read.
    old_a.tap.inject(&frame(5));
    hub.spoke("b").tap.inject(&frame(6));
    assert_eq!(b.frames(1, WAIT), vec![frame(6)]);
    assert!(a.frames(1, QUIET).is_empty());
    assert!(c.frames(1, QUIET).is_empty());
}

/// The keepalive timers in the running thread: a spoke whose address the
/// hub learned gets one at once, then one per interval (each re-armed
/// after it went); a spoke never heard from gets none.
#[test]
fn keepalives_go_to_each_learned_spoke_every_interval() {
    let net = Arc::new(MemNet::default());
    let cfg = HubConfig {
        keepalive: Duration::from_millis(100),
        ..config(None)
    };
    let hub = MemHub::with(&net, &[("a", KEY_A), ("b", KEY_B)], cfg);
    let mut a = TestSpoke::new(&net, "198.51.100.1:9123", KEY_A);
    let b = TestSpoke::new(&net, "203.0.113.2:4000", KEY_B);
    a.send(&frame(1));
    assert_eq!(hub.spoke("a").tap.written(1, WAIT).len(), 1);
    // About 10 in a second; a loaded machine may delay a few.
    let n = a.datagrams(Duration::from_secs(1));
    assert!((5..=12).contains(&n), "{n} keepalives in 1 s at 100 ms");
    assert!(hub.spoke("a").counters.keepalives_tx.load(Relaxed) >= 5);
    assert_eq!(b.datagrams(QUIET), 0);
}

impl TestSpoke {
    /// A spoke in the confidential mode (`cipher`), the hub its peer: it
    /// initiates the handshake at its first [`TestSpoke::pump`].
    fn confidential(net: &Arc<MemNet>, at: &str, k: &str, cipher: Cipher, seed: u8) -> TestSpoke {
        let setup = Setup {
            keying: Keying::new(&key(k), Some((cipher, [seed; 32]))),
            mtu: 1418,
            path: 1472,
            gso: false,
            coalesce: None,
            clamp: None,
            max_age_ns: 3_000_000_000,
            keepalive_ns: 0,
            peer: Some(addr(HUB)),
        };
        TestSpoke {
            session: Session::new(&setup),
            socket: net.bind(addr(at)),
        }
    }

    /// Runs the handshake timers and sends what they (or the last
    /// receive) put in the outbox.
    fn pump(&mut self) {
        let sock = &self.socket;
        self.session.handshake(engine::unix_nanos(), &mut |dg, to| {
            let _ = sock.send_to(dg, to);
        });
    }

    /// Handshakes with the hub until this spoke has a session and the hub
    /// learned it at `at` (from its confirming keepalive, which also
    /// makes the hub seal under the session).
    fn connect(&mut self, hub: &MemHub, name: &str, at: &str) {
        let end = Instant::now() + WAIT;
        let mut buf = vec![0u8; 70_000];
        while self.session.send_key().is_none() && Instant::now() < end {
            self.pump();
            if let Ok(r) = Socket::recv(&self.socket, &mut buf)
                && let Some(from) = r.from
            {
                let now = engine::unix_nanos();
                self.session.receive(
                    &mut buf[..r.len],
                    None,
                    r.ecn,
                    from,
                    now,
                    &mut |_: &[u8]| {},
                );
                self.pump();
            }
        }
        assert!(
            self.session.send_key().is_some(),
            "spoke {name}: no session"
        );
        learns(hub, name, at);
    }
}

/// Waits (bounded) until `f` holds.
fn until(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + WAIT;
    while !f() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// The confidential mode through the hub: each spoke's handshake is
/// answered (the receiving thread drains each spoke's outbox), frames
/// cross both ways under the sessions, a spoke that moves is found by the
/// session index its datagrams name (no trial), and a datagram naming an
/// index no session has is dropped as `unknown_session` of the spoke at
/// its address.
#[test]
fn confidential_spokes_handshake_and_are_found_by_session_index() {
    let net = Arc::new(MemNet::default());
    let cfg = HubConfig {
        cipher: Some(Cipher::ChaCha20Poly1305),
        ..config(None)
    };
    let hub = MemHub::with(&net, &[("a", KEY_A), ("b", KEY_B)], cfg);
    let c = Cipher::ChaCha20Poly1305;
    let mut a = TestSpoke::confidential(&net, "198.51.100.1:9123", KEY_A, c, 1);
    let mut b = TestSpoke::confidential(&net, "203.0.113.2:4000", KEY_B, c, 2);
    a.connect(&hub, "a", "198.51.100.1:9123");
    b.connect(&hub, "b", "203.0.113.2:4000");
    a.send(&frame(1));
    b.send(&frame(2));
    assert_eq!(hub.spoke("a").tap.written(1, WAIT), vec![frame(1)]);
    assert_eq!(hub.spoke("b").tap.written(1, WAIT), vec![frame(2)]);
    hub.spoke("a").tap.inject(&frame(3));
    hub.spoke("b").tap.inject(&frame(4));
    assert_eq!(a.frames(1, WAIT), vec![frame(3)]);
    assert_eq!(b.frames(1, WAIT), vec![frame(4)]);
    // The status views show each spoke's session.
    let text = status::render(&hub.0.shared, Form::Text);
    assert!(text.contains("  session: responder, age "), "{text}");
    let json = status::render(&hub.0.shared, Form::Json);
    assert!(json.contains("\"session\":{\"initiator\":false,"), "{json}");
    let prom = status::render(&hub.0.shared, Form::Prometheus);
    assert!(
        prom.contains("taptun_hub_spoke_session_age_seconds{"),
        "{prom}"
    );
    // a moves (its NAT rebinds): its next datagram names its session's
    // index, which finds it at once.
    let trials = hub.0.shared.trials.load(Relaxed);
    a.socket = net.bind(addr("198.51.100.1:40000"));
    let sent = a.send(&frame(5));
    assert_eq!(hub.spoke("a").tap.written(1, WAIT), vec![frame(5)]);
    learns(&hub, "a", "198.51.100.1:40000");
    assert_eq!(hub.0.shared.trials.load(Relaxed), trials, "found by trial");
    hub.spoke("a").tap.inject(&frame(6));
    assert_eq!(a.frames(1, WAIT), vec![frame(6)]);
    // An index no session has, from a's address: a's drop.
    let mut dg = sent[0].clone();
    let idx = u32::from_be_bytes(dg[4..8].try_into().unwrap());
    dg[4..8].copy_from_slice(&(!idx).to_be_bytes());
    a.socket.send_to(&dg, addr(HUB)).expect("send");
    assert!(until(|| hub
        .spoke("a")
        .counters
        .drops(DropReason::UnknownSession)
        == 1));
    assert!(hub.spoke("a").tap.written(1, QUIET).is_empty());
    assert_eq!(hub.spoke("a").auth_failed.load(Relaxed), 0);
    assert_eq!(hub.0.shared.trials.load(Relaxed), trials);
    // b never noticed any of it.
    b.send(&frame(7));
    assert_eq!(hub.spoke("b").tap.written(1, WAIT), vec![frame(7)]);
    assert_eq!(hub.spoke("b").counters.drops(DropReason::UnknownSession), 0);
}

/// A restarted confidential hub initiates a session with each spoke at
/// the state file's address (the spoke, a responder here, need not wait
/// for its renewal), and frames cross both ways under it.
#[test]
fn a_restarted_confidential_hub_initiates_to_the_state_files_addresses() {
    let dir = std::env::temp_dir().join(format!("taptun-hub-noise-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let state = dir.join("hub.state");
    let at = "198.51.100.1:9123";
    let table: state::Table = [("a".to_string(), addr(at))].into_iter().collect();
    state::write(&state, STATE_HEADER, &table).expect("state file");
    let net = Arc::new(MemNet::default());
    let c = Cipher::Aes256Gcm;
    let mut a = TestSpoke::confidential(&net, at, KEY_A, c, 3);
    // A responder: it knows no address of the hub's.
    a.session = Session::new(&Setup {
        keying: Keying::new(&key(KEY_A), Some((c, [3; 32]))),
        mtu: 1418,
        path: 1472,
        gso: false,
        coalesce: None,
        clamp: None,
        max_age_ns: 3_000_000_000,
        keepalive_ns: 0,
        peer: None,
    });
    let cfg = HubConfig {
        cipher: Some(c),
        ..config(Some(state.clone()))
    };
    let hub = MemHub::with(&net, &[("a", KEY_A)], cfg);
    let end = Instant::now() + WAIT;
    let mut buf = vec![0u8; 70_000];
    while a.session.send_key().is_none() && Instant::now() < end {
        if let Ok(r) = Socket::recv(&a.socket, &mut buf)
            && let Some(from) = r.from
        {
            let now = engine::unix_nanos();
            a.session.receive(
                &mut buf[..r.len],
                None,
                r.ecn,
                from,
                now,
                &mut |_: &[u8]| {},
            );
            a.pump();
        }
    }
    assert!(a.session.send_key().is_some(), "no session");
    assert!(until(
        || status::render(&hub.0.shared, Form::Text).contains("  session: initiator, age ")
    ));
    hub.spoke("a").tap.inject(&frame(1));
    assert_eq!(a.frames(1, WAIT), vec![frame(1)]);
    a.send(&frame(2));
    assert_eq!(hub.spoke("a").tap.written(1, WAIT), vec![frame(2)]);
    let json = status::render(&hub.0.shared, Form::Json);
    assert!(
        json.contains("\"session\":{\"initiator\":true,") && json.contains("\"handshakes\":1,"),
        "{json}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The hub's one receive queue under the AQM: bursts of datagrams from two
/// spokes, found waiting in the socket (stamped by the in-memory network
/// as having waited 25 ms), for longer than CoDel's interval (1 ms here)
/// get some of each spoke's ECN-capable
/// frames marked CE (the signal goes to whichever spoke's datagram comes
/// next), a few, not all; the status has the queue's line and figures.
/// With `--aqm off`, none.
#[test]
fn the_hubs_receive_queue_is_signalled_to_the_spokes() {
    use crate::ecn::{self, Ecn};
    use crate::offload::headers::Ipv4Packet;
    use crate::offload::testutil::{payload, udp_frame};
    let params = crate::codel::Params {
        target_ns: 500_000,
        interval_ns: 1_000_000,
    };
    for aqm in [Some(params), None] {
        let net = Arc::new(MemNet::default());
        net.queued_ns
            .store(25_000_000, std::sync::atomic::Ordering::SeqCst);
        let cfg = HubConfig {
            aqm,
            ..config(None)
        };
        let hub = MemHub::with(&net, &[("a", KEY_A), ("b", KEY_B)], cfg);
        let mut spokes = [
            TestSpoke::new(&net, "198.51.100.1:9123", KEY_A),
            TestSpoke::new(&net, "203.0.113.2:4000", KEY_B),
        ];
        // Eight bursts of 600 frames, each from a spoke drawn at random.
        let mut sent = [0usize; 2];
        let mut rng = crate::offload::testutil::XorShift(0x9e37_79b9_7f4a_7c15);
        let mut f = udp_frame(false, false, &payload(100));
        Ipv4Packet::new_unchecked(&mut f[14..]).set_ecn(Ecn::Ect0.bits());
        for _ in 0..8 {
            for _ in 0..600 {
                let i = (rng.next() >> 32) as usize % 2;
                spokes[i].send(&f);
                sent[i] += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut ce = Vec::new();
        for (i, name) in ["a", "b"].into_iter().enumerate() {
            let got = hub.spoke(name).tap.written(sent[i], WAIT);
            assert_eq!(got.len(), sent[i], "spoke {name}");
            ce.push(got.iter().filter(|f| ecn::of_frame(f) == Ecn::Ce).count());
        }
        let marks: Vec<u64> = ["a", "b"]
            .iter()
            .map(|n| {
                hub.spoke(n)
                    .counters
                    .aqm_marks
                    .load(std::sync::atomic::Ordering::SeqCst)
            })
            .collect();
        let what = format!("{aqm:?}: {sent:?} frames, CE {ce:?}, marks {marks:?}");
        assert_eq!(
            ce.iter().map(|&n| n as u64).collect::<Vec<_>>(),
            marks,
            "{what}"
        );
        match aqm {
            // Not every frame (CoDel's rate; a tenth natively, more under
            // qemu, where reading the bursts takes far longer).
            Some(_) => assert!(ce.iter().zip(sent).all(|(&n, s)| n > 0 && n < s), "{what}"),
            None => assert_eq!(ce, [0, 0], "{what}"),
        }
        // The queue's figures, a second on.
        std::thread::sleep(Duration::from_millis(1_100));
        spokes[0].send(&frame(9));
        let _ = hub.spoke("a").tap.written(1, WAIT);
        let text = status::render(&hub.0.shared, Form::Text);
        let want = match aqm {
            Some(_) => "AQM CoDel (target 0.5 ms, interval 1 ms)",
            None => "AQM off",
        };
        assert!(
            text.contains("  receive queue: waited ") && text.contains(want),
            "{text}"
        );
        let json = status::render(&hub.0.shared, Form::Json);
        let max: f64 = json
            .split("\"sojourn_max_ms\":")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!((25.0..500.0).contains(&max), "{json}");
    }
}
