//! Two keyrings in memory, in virtual time.

use super::*;

const T0: u64 = 1_000 * SEC;
const PSK: [u8; 32] = [7; 32];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Two {
    k: [Keyring; 2],
    at: [SocketAddr; 2],
    now: u64,
}

impl Two {
    fn new(c: Cipher) -> Two {
        Two {
            k: [
                Keyring::new(c, &PSK, [1; 32]),
                Keyring::new(c, &PSK, [2; 32]),
            ],
            at: [addr("192.0.2.1:1"), addr("192.0.2.2:2")],
            now: T0,
        }
    }

    /// Polls side `i` (which knows the other's address) and carries
    /// every datagram that results until none is left; returns them all.
    fn poll(&mut self, i: usize) -> Vec<Vec<u8>> {
        let mut out = Outbox::default();
        self.k[i].poll(Some(self.at[1 - i]), self.now, &mut out);
        self.carry(i, out)
    }

    fn carry(&mut self, from: usize, mut out: Outbox) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        let mut queue: Vec<(usize, Vec<u8>)> = Vec::new();
        out.drain(|d, _| queue.push((1 - from, d.to_vec())));
        while let Some((to, d)) = queue.pop() {
            seen.push(d.clone());
            let mut b = d.clone();
            let mut o = Outbox::default();
            let src = self.at[1 - to];
            self.k[to].receive(&mut b, src, Some(src), self.now, &mut o);
            o.drain(|d, _| queue.push((1 - to, d.to_vec())));
        }
        seen
    }

    /// Seals `frame` on side `i` and opens it on the other.
    fn send(&mut self, i: usize, frame: &[u8]) -> Received {
        let Some(k) = self.k[i].send_key() else {
            return Received::Refused(Refusal::UnknownSession);
        };
        let mut d = vec![0u8; OVERHEAD + frame.len()];
        d[16..16 + frame.len()].copy_from_slice(frame);
        k.seal(&mut d).unwrap();
        let mut o = Outbox::default();
        let r = self.k[1 - i].receive(&mut d, self.at[i], Some(self.at[i]), self.now, &mut o);
        if let Received::Data { frame: f, .. } = &r {
            assert_eq!(&d[f.clone()], frame);
        }
        r
    }
}

#[test]
fn handshake_then_data_both_ways_both_ciphers() {
    for c in Cipher::ALL {
        let mut t = Two::new(c);
        let msgs = t.poll(0);
        // Initiation, response, the confirming keepalive.
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs.iter().map(|m| m[0]).collect::<Vec<_>>(), [1, 2, 4]);
        assert!(t.k[0].take_send_key().unwrap().is_some());
        // The keepalive confirmed the responder's session.
        assert!(t.k[1].take_send_key().unwrap().is_some());
        assert!(matches!(
            t.send(0, b"to b"),
            Received::Data { newest: true, .. }
        ));
        assert!(matches!(
            t.send(1, b"to a"),
            Received::Data { newest: true, .. }
        ));
        let (a, b) = (t.k[0].status(), t.k[1].status());
        assert!(a.initiator && !b.initiator);
        assert_eq!(a.indices.map(|(l, r)| (r, l)), b.indices);
        assert_eq!((a.handshakes, b.handshakes), (1, 1));
    }
}

#[test]
fn a_responder_sends_only_once_the_initiator_confirms() {
    let mut t = Two::new(Cipher::Aes256Gcm);
    let mut out = Outbox::default();
    t.k[0].poll(Some(t.at[1]), t.now, &mut out);
    let mut init = Vec::new();
    out.drain(|d, _| init = d.to_vec());
    let mut o = Outbox::default();
    assert_eq!(
        t.k[1].receive(&mut init.clone(), t.at[0], None, t.now, &mut o),
        Received::Handshake
    );
    assert!(t.k[1].send_key().is_none(), "not before confirmation");
    // The same initiation again (a replay): refused, no second answer.
    let mut o2 = Outbox::default();
    assert_eq!(
        t.k[1].receive(&mut init.clone(), t.at[0], None, t.now, &mut o2),
        Received::Refused(Refusal::Answered)
    );
    assert!(o2.is_empty());
    let mut resp = Vec::new();
    o.drain(|d, _| resp = d.to_vec());
    let mut o3 = Outbox::default();
    assert_eq!(
        t.k[0].receive(&mut resp.clone(), t.at[1], Some(t.at[1]), t.now, &mut o3),
        Received::Handshake
    );
    // The response replayed: no initiation of ours waits for it.
    assert_eq!(
        t.k[0].receive(
            &mut resp.clone(),
            t.at[1],
            Some(t.at[1]),
            t.now,
            &mut Outbox::default()
        ),
        Received::Refused(Refusal::BadResponse)
    );
    let mut ka = Vec::new();
    o3.drain(|d, _| ka = d.to_vec());
    assert!(matches!(
        t.k[1].receive(
            &mut ka.clone(),
            t.at[0],
            None,
            t.now,
            &mut Outbox::default()
        ),
        Received::Data { .. }
    ));
    assert!(t.k[1].send_key().is_some());
    assert_eq!(
        t.k[1].receive(&mut ka, t.at[0], None, t.now, &mut Outbox::default()),
        Received::Refused(Refusal::Replay)
    );
}

#[test]
fn renewal_keeps_the_old_session_for_what_is_in_flight() {
    let mut t = Two::new(Cipher::ChaCha20Poly1305);
    t.poll(0);
    let old = t.k[0].send_key().unwrap();
    let mut late = vec![0u8; OVERHEAD + 3];
    old.seal(&mut late).unwrap();
    // Nothing due before 120 s; the responder does not initiate first.
    t.now += REKEY_AFTER_NS - 1;
    assert!(t.poll(1).is_empty());
    assert!(t.poll(0).is_empty());
    t.now += 1;
    assert!(t.poll(1).is_empty(), "the initiator renews first");
    assert_eq!(t.poll(0).len(), 3);
    assert_ne!(t.k[0].send_key().unwrap().local(), old.local());
    // A datagram sealed under the old session still opens, once.
    let mut o = Outbox::default();
    assert!(matches!(
        t.k[1].receive(&mut late.clone(), t.at[0], None, t.now, &mut o),
        Received::Data { .. }
    ));
    assert_eq!(
        t.k[1].receive(&mut late, t.at[0], None, t.now, &mut o),
        Received::Refused(Refusal::Replay)
    );
    // Past the old session's end: unknown.
    let mut later = vec![0u8; OVERHEAD];
    old.seal(&mut later).unwrap();
    t.now += REJECT_AFTER_NS;
    assert_eq!(
        t.k[1].receive(&mut later, t.at[0], None, t.now, &mut o),
        Received::Refused(Refusal::UnknownSession)
    );
}

#[test]
fn crossing_initiations_make_one_session() {
    for round in 0..20u8 {
        let c = Cipher::Aes256Gcm;
        let mut t = Two::new(c);
        t.k[0] = Keyring::new(c, &PSK, [round; 32]);
        t.k[1] = Keyring::new(c, &PSK, [round.wrapping_add(100); 32]);
        let (mut o0, mut o1) = (Outbox::default(), Outbox::default());
        t.k[0].poll(Some(t.at[1]), t.now, &mut o0);
        t.k[1].poll(Some(t.at[0]), t.now, &mut o1);
        // Both in flight at once, then delivered.
        let mut q: Vec<(usize, Vec<u8>)> = Vec::new();
        o0.drain(|d, _| q.push((1, d.to_vec())));
        o1.drain(|d, _| q.push((0, d.to_vec())));
        while !q.is_empty() {
            let (to, d) = q.remove(0);
            let mut o = Outbox::default();
            let src = t.at[1 - to];
            t.k[to].receive(&mut d.clone(), src, Some(src), t.now, &mut o);
            o.drain(|d, _| q.push((1 - to, d.to_vec())));
        }
        let (a, b) = (t.k[0].send_key().unwrap(), t.k[1].send_key().unwrap());
        assert_eq!(
            (a.local(), a.remote()),
            (b.remote(), b.local()),
            "round {round}"
        );
        assert_eq!(t.k[0].status().handshakes + t.k[1].status().handshakes, 2);
    }
}

#[test]
fn a_wrong_key_or_cipher_makes_nothing() {
    let mut t = Two::new(Cipher::Aes256Gcm);
    t.k[1] = Keyring::new(Cipher::Aes256Gcm, &[8; 32], [2; 32]);
    let msgs = t.poll(0);
    assert_eq!(msgs.len(), 1);
    assert_eq!(t.k[1].status().refused, 1);
    assert!(t.k[0].send_key().is_none() && t.k[1].send_key().is_none());
    let mut t = Two::new(Cipher::Aes256Gcm);
    t.k[1] = Keyring::new(Cipher::ChaCha20Poly1305, &PSK, [2; 32]);
    assert_eq!(t.poll(0).len(), 1);
    // Retried after 1 s, 2 s, 4 s, then every 5 s (plus jitter), not before.
    for wait in [1, 2, 4, 5, 5, 5] {
        t.now += wait * SEC - 1;
        assert!(t.poll(0).is_empty(), "before {wait} s");
        t.now += JITTER_NS + 1;
        assert_eq!(t.poll(0).len(), 1, "after {wait} s");
    }
    assert_eq!(t.k[0].status().initiations, 7);
}

#[test]
fn a_new_key_file_renews_at_once_and_ends_old_sessions() {
    let mut t = Two::new(Cipher::Aes256Gcm);
    t.poll(0);
    let old = t.k[1].send_key().unwrap();
    t.now += 10 * SEC;
    t.k[1].set_psk(&[9; 32], t.now);
    // The other side still has the old key: its sessions go on.
    assert_eq!(t.poll(1).len(), 1);
    assert!(matches!(t.send(1, b"x"), Received::Data { .. }));
    t.k[0].set_psk(&[9; 32], t.now);
    // Its initiation crosses the one the other side sent under the new key
    // (refused here, under the old one); either way a session results.
    let n = t.poll(0).len();
    assert!(n == 3 || n == 4, "{n} messages");
    assert_ne!(t.k[1].send_key().unwrap().local(), old.local());
    // Within one renewal interval, nothing under the old key opens.
    let mut d = vec![0u8; OVERHEAD];
    old.seal(&mut d).unwrap();
    t.now += REKEY_AFTER_NS;
    t.poll(0);
    t.poll(1);
    let mut o = Outbox::default();
    assert_eq!(
        t.k[0].receive(&mut d, t.at[1], None, t.now, &mut o),
        Received::Refused(Refusal::UnknownSession)
    );
}

/// Both sides rotate the key file, one after the other: the first one's
/// initiation is refused by the second (old key), whose own then crosses
/// the first one's pending one. Whichever wins, the session is made at
/// once, not after a retry's coin flip; nothing counts as a replay.
#[test]
fn a_rotation_on_both_sides_makes_a_session_at_once() {
    let mut won = [0; 2];
    for round in 0..40u8 {
        let c = Cipher::ChaCha20Poly1305;
        let mut t = Two::new(c);
        t.k[0] = Keyring::new(c, &PSK, [round; 32]);
        t.k[1] = Keyring::new(c, &PSK, [round.wrapping_add(100); 32]);
        t.poll(0);
        let old = t.k[0].send_key().unwrap().local();
        t.now += 10 * SEC;
        t.k[1].set_psk(&[9; 32], t.now);
        // Refused by side 0, which still has the old key.
        assert_eq!(t.poll(1).len(), 1, "round {round}");
        t.k[0].set_psk(&[9; 32], t.now);
        let n = t.poll(0).len();
        let (a, b) = (t.k[0].send_key().unwrap(), t.k[1].send_key().unwrap());
        assert_eq!(
            (a.local(), a.remote()),
            (b.remote(), b.local()),
            "round {round}"
        );
        assert_ne!(a.local(), old, "round {round}: still the old session");
        // Initiation, (the winner's again,) response, keepalive.
        won[usize::from(n == 4)] += 1;
        assert!(n == 3 || n == 4, "round {round}: {n} messages");
        assert_eq!(t.k[0].status().replayed + t.k[1].status().replayed, 0);
    }
    // Both orders of the tie were met.
    assert!(won[0] > 0 && won[1] > 0, "{won:?}");
}

/// The usual crossing (each side gets the other's initiation): the
/// winner's second copy reaches a loser that answered the first, which
/// takes it as expected; a third copy is a replay.
#[test]
fn the_crossing_winners_copy_is_not_a_replay_but_a_third_is() {
    let c = Cipher::Aes256Gcm;
    for round in 0..20u8 {
        let mut t = Two::new(c);
        t.k[0] = Keyring::new(c, &PSK, [round; 32]);
        t.k[1] = Keyring::new(c, &PSK, [round.wrapping_add(50); 32]);
        let (mut o0, mut o1) = (Outbox::default(), Outbox::default());
        t.k[0].poll(Some(t.at[1]), t.now, &mut o0);
        t.k[1].poll(Some(t.at[0]), t.now, &mut o1);
        let (mut i0, mut i1) = (Vec::new(), Vec::new());
        o0.drain(|d, _| i0.push(d.to_vec()));
        o1.drain(|d, _| i1.push(d.to_vec()));
        // Each reads the other's initiation before anything else.
        let mut out = [Outbox::default(), Outbox::default()];
        t.k[1].receive(
            &mut i0[0].clone(),
            t.at[0],
            Some(t.at[0]),
            t.now,
            &mut out[1],
        );
        t.k[0].receive(
            &mut i1[0].clone(),
            t.at[1],
            Some(t.at[1]),
            t.now,
            &mut out[0],
        );
        // The winner answered nothing and sent its initiation again; the
        // loser answered.
        let (mut d0, mut d1) = (Vec::new(), Vec::new());
        let [x0, x1] = &mut out;
        x0.drain(|d, _| d0.push(d.to_vec()));
        x1.drain(|d, _| d1.push(d.to_vec()));
        let (w, copy) = if d0.len() == 1 && d0[0] == i0[0] {
            (0, d0[0].clone())
        } else {
            assert!(d1.len() == 1 && d1[0] == i1[0], "round {round}");
            (1, d1[0].clone())
        };
        let l = 1 - w;
        let mut o = Outbox::default();
        assert_eq!(
            t.k[l].receive(&mut copy.clone(), t.at[w], Some(t.at[w]), t.now, &mut o),
            Received::Refused(Refusal::Repeated)
        );
        assert!(o.is_empty());
        assert_eq!(t.k[l].status().refused, 0);
        assert_eq!(
            t.k[l].receive(&mut copy.clone(), t.at[w], Some(t.at[w]), t.now, &mut o),
            Received::Refused(Refusal::Answered)
        );
        assert!(o.is_empty());
        assert_eq!(t.k[l].status().replayed, 1);
    }
}

#[test]
fn made_up_initiations_are_refused_within_budget() {
    let mut t = Two::new(Cipher::Aes256Gcm);
    t.poll(0);
    let mut seed = 1u64;
    let mut refused = [0u64; 2];
    for i in 0..30_000u64 {
        let mut d = [0u8; INITIATION_LEN];
        d[0] = 1;
        for b in d[4..].iter_mut() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (seed >> 56) as u8;
        }
        let now = t.now + i * 50_000; // 20 000 a second
        let src = addr(&format!("198.51.100.{}:{}", i % 250, 1000 + i % 7));
        match t.k[1].receive(&mut d, src, Some(t.at[0]), now, &mut Outbox::default()) {
            Received::Refused(Refusal::BadInitiation) => refused[0] += 1,
            Received::Refused(Refusal::RateLimited) => refused[1] += 1,
            r => panic!("{r:?}"),
        }
    }
    assert!(refused[0] > 25_000, "{refused:?}");
    // The session is untouched.
    assert!(matches!(t.send(0, b"still"), Received::Data { .. }));
}

/// A genuine initiation that never arrived (captured before it was lost)
/// replayed after the real retry was answered: answered too (it is new to
/// the responder), yet the real initiator's confirmation still finds its
/// own session, and the replayed one's answer goes nowhere.
#[test]
fn a_replayed_lost_initiation_does_not_push_out_the_real_one() {
    let mut t = Two::new(Cipher::Aes256Gcm);
    let mut lost = Vec::new();
    let mut out = Outbox::default();
    t.k[0].poll(Some(t.at[1]), t.now, &mut out);
    out.drain(|d, _| lost = d.to_vec());
    t.now += REKEY_TIMEOUT_NS + JITTER_NS;
    let mut retry = Vec::new();
    t.k[0].poll(Some(t.at[1]), t.now, &mut out);
    out.drain(|d, _| retry = d.to_vec());
    let attacker = addr("198.51.100.66:1");
    let mut answer = Outbox::default();
    assert_eq!(
        t.k[1].receive(&mut retry, t.at[0], None, t.now, &mut answer),
        Received::Handshake
    );
    // The replay arrives before the initiator's confirmation.
    let mut o = Outbox::default();
    assert_eq!(
        t.k[1].receive(&mut lost.clone(), attacker, None, t.now, &mut o),
        Received::Handshake
    );
    // Only once: the same initiation again is a replay.
    assert_eq!(
        t.k[1].receive(&mut lost.clone(), attacker, None, t.now, &mut o),
        Received::Refused(Refusal::Answered)
    );
    let mut resp = Vec::new();
    answer.drain(|d, _| resp = d.to_vec());
    let mut confirm = Outbox::default();
    assert_eq!(
        t.k[0].receive(&mut resp, t.at[1], Some(t.at[1]), t.now, &mut confirm),
        Received::Handshake
    );
    let mut ka = Vec::new();
    confirm.drain(|d, _| ka = d.to_vec());
    assert!(matches!(
        t.k[1].receive(&mut ka, t.at[0], None, t.now, &mut Outbox::default()),
        Received::Data { newest: true, .. }
    ));
    let (a, b) = (t.k[0].send_key().unwrap(), t.k[1].send_key().unwrap());
    assert_eq!((a.local(), a.remote()), (b.remote(), b.local()));
}

/// The indices a hub looks a datagram up by: the initiation's in flight
/// (which the response names), then each session's, the previous one's
/// too after a renewal, none once they expired.
#[test]
fn indices_follow_the_initiation_and_the_sessions() {
    let mut t = Two::new(Cipher::ChaCha20Poly1305);
    // current, previous, in flight, first answered
    let four = |k: &Keyring| {
        let i = k.indices();
        assert!(i[4..].iter().all(Option::is_none), "{i:?}");
        [i[0], i[1], i[2], i[3]]
    };
    assert_eq!(t.k[0].indices(), [None; INDICES]);
    let mut out = Outbox::default();
    t.k[0].poll(Some(t.at[1]), t.now, &mut out);
    let mut init = Vec::new();
    out.drain(|d, _| init = d.to_vec());
    let [None, None, Some(pending), None] = four(&t.k[0]) else {
        panic!("{:?}", t.k[0].indices())
    };
    let mut o = Outbox::default();
    t.k[1].receive(&mut init, t.at[0], Some(t.at[0]), t.now, &mut o);
    // The responder's session waits for confirmation in `next`.
    let [None, None, None, Some(b_next)] = four(&t.k[1]) else {
        panic!("{:?}", t.k[1].indices())
    };
    t.carry(1, o);
    assert_eq!(t.k[0].status().indices, Some((pending, b_next)));
    assert_eq!(four(&t.k[0]), [Some(pending), None, None, None]);
    assert_eq!(four(&t.k[1]), [Some(b_next), None, None, None]);
    // Renewed: the old session still receives, and is still found.
    t.now += REKEY_AFTER_NS;
    t.poll(0);
    let [Some(new), Some(old), None, None] = four(&t.k[0]) else {
        panic!("{:?}", t.k[0].indices())
    };
    assert_eq!(old, pending);
    assert_ne!(new, old);
    // All expired: nothing to find.
    t.now += 2 * REJECT_AFTER_NS;
    t.k[0].poll(None, t.now, &mut Outbox::default());
    assert_eq!(t.k[0].indices(), [None; INDICES]);
    for x in [pending, new] {
        assert!(!t.k[0].has_session(x));
    }
}
