//! CoDel (RFC 8289) on the time datagrams waited in the UDP socket's
//! receive queue: the queue taptun owns at the receiver, where a bulk
//! transfer through the tunnel builds a standing queue that every other
//! flow waits behind. The kernel stamps each datagram on arrival
//! (`SO_TIMESTAMPNS`); the receiving thread gives this controller the
//! head's sojourn time at each receive, and when it says so, signals
//! congestion on the next frame: CE if ECN-capable (RFC 3168, as fq_codel
//! does with `ecn`), else a drop. Pure: the caller passes `now`.
//!
//! One receive is one dequeue, as in Linux's `codel_dequeue` one signal at
//! most per dequeue: a GRO run of 64 datagrams gets one mark, and the rate
//! of signals is CoDel's control law (`interval / sqrt(count)`), not a
//! count of packets.

/// A CoDel controller's parameters (ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// The sojourn time tolerated as standing queue.
    pub target_ns: u64,
    /// How long the sojourn must stay above `target_ns` before the first
    /// signal, and the control law's base (of the order of the flows'
    /// round-trip times through the tunnel).
    pub interval_ns: u64,
}

impl Params {
    /// The defaults: a 0.5 ms target over a 5 ms interval. RFC 8289's 5 ms
    /// / 100 ms are sized for an Internet path's bottleneck queue; this
    /// queue sits between two hosts' CPUs, the flows it carries see round
    /// trips of a few milliseconds through the tunnel at most on a LAN, and
    /// the goal is sub-millisecond latency under load.
    pub const DEFAULT: Params = Params {
        target_ns: 500_000,
        interval_ns: 5_000_000,
    };
}

/// `--aqm`'s value: `on` (the defaults), `off` (`None`), or
/// `TARGET_MS/INTERVAL_MS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting(pub Option<Params>);

impl std::str::FromStr for Setting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // (The caller names the flag and the value.)
        let bad = || {
            "expected on, off or TARGET_MS/INTERVAL_MS, e.g. 0.5/5, with 0 < TARGET < INTERVAL <= 1000"
                .to_string()
        };
        match s {
            "on" => return Ok(Setting(Some(Params::DEFAULT))),
            "off" => return Ok(Setting(None)),
            _ => {}
        }
        let (t, i) = s.split_once('/').ok_or_else(bad)?;
        let ms = |v: &str| -> Result<u64, String> {
            let f: f64 = v.trim().parse().map_err(|_| bad())?;
            match f.is_finite() && f > 0.0 && f <= 1000.0 {
                true => Ok((f * 1e6) as u64),
                false => Err(bad()),
            }
        };
        let (target_ns, interval_ns) = (ms(t)?, ms(i)?);
        if target_ns == 0 || target_ns >= interval_ns {
            return Err(bad());
        }
        Ok(Setting(Some(Params {
            target_ns,
            interval_ns,
        })))
    }
}

impl std::fmt::Display for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "target {} ms, interval {} ms",
            self.target_ns as f64 / 1e6,
            self.interval_ns as f64 / 1e6
        )
    }
}

/// One queue's CoDel state.
#[derive(Debug, Clone)]
pub struct Codel {
    params: Params,
    /// When the sojourn went (and stayed) above target, plus one interval:
    /// the earliest time to start signalling. `None` while below target.
    first_above: Option<u64>,
    /// In the signalling state.
    dropping: bool,
    /// The next signal is due at this time (in the signalling state).
    drop_next: u64,
    /// Signals since entering the signalling state (the control law's).
    count: u32,
    /// `count` when the signalling state was last entered.
    last_count: u32,
    /// Signals given in all.
    signals: u64,
}

impl Codel {
    /// A controller with `params`, in the quiet state.
    pub fn new(params: Params) -> Self {
        Codel {
            params,
            first_above: None,
            dropping: false,
            drop_next: 0,
            count: 0,
            last_count: 0,
            signals: 0,
        }
    }

    /// The parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    /// Signals given since the start.
    pub fn signals(&self) -> u64 {
        self.signals
    }

    /// Whether it is signalling now (the sojourn stayed above target).
    pub fn signalling(&self) -> bool {
        self.dropping
    }

    /// A receive at `now` whose head waited `sojourn_ns` in the queue:
    /// whether to signal congestion on it (mark CE, or drop).
    pub fn dequeue(&mut self, now: u64, sojourn_ns: u64) -> bool {
        let ok_to_signal = self.ok_to_signal(now, sojourn_ns);
        if self.dropping {
            if !ok_to_signal {
                self.dropping = false;
                return false;
            }
            if now >= self.drop_next {
                self.count = self.count.saturating_add(1);
                self.drop_next = self.control_law(self.drop_next);
                self.signals += 1;
                return true;
            }
            return false;
        }
        if !ok_to_signal {
            return false;
        }
        // Entering the signalling state: if it was left recently, resume
        // near the rate it had (RFC 8289 §5.5), else start at one.
        self.dropping = true;
        let delta = self.count.saturating_sub(self.last_count);
        self.count = match delta > 1
            && now.saturating_sub(self.drop_next) < self.params.interval_ns.saturating_mul(16)
        {
            true => delta,
            false => 1,
        };
        self.last_count = self.count;
        self.drop_next = self.control_law(now);
        self.signals += 1;
        true
    }

    /// RFC 8289's `dodequeue` test: the sojourn has been above target for
    /// at least an interval.
    fn ok_to_signal(&mut self, now: u64, sojourn_ns: u64) -> bool {
        if sojourn_ns < self.params.target_ns {
            self.first_above = None;
            return false;
        }
        match self.first_above {
            None => {
                self.first_above = Some(now.saturating_add(self.params.interval_ns));
                false
            }
            Some(t) => now >= t,
        }
    }

    /// `t + interval / sqrt(count)`.
    fn control_law(&self, t: u64) -> u64 {
        let c = f64::from(self.count.max(1));
        t.saturating_add((self.params.interval_ns as f64 / c.sqrt()) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const US: u64 = 1_000;

    fn codel() -> Codel {
        Codel::new(Params::DEFAULT)
    }

    /// Times (ns from 0) of the signals over `span` of receives every
    /// `step`, each with the sojourn `sojourn(t)`.
    fn run(
        c: &mut Codel,
        from: u64,
        span: u64,
        step: u64,
        sojourn: impl Fn(u64) -> u64,
    ) -> Vec<u64> {
        let mut out = Vec::new();
        let mut t = from;
        while t < from + span {
            if c.dequeue(t, sojourn(t)) {
                out.push(t);
            }
            t += step;
        }
        out
    }

    #[test]
    fn below_target_never_signals() {
        let mut c = codel();
        assert!(run(&mut c, 0, 1_000 * MS, 10 * US, |_| 499 * US).is_empty());
        assert!(!c.signalling());
    }

    #[test]
    fn a_burst_shorter_than_an_interval_is_tolerated() {
        // Above target for 4.9 ms of each 10: the queue drains each time.
        let mut c = codel();
        let s = run(&mut c, 0, 1_000 * MS, 10 * US, |t| {
            match t % (10 * MS) < 4_900 * US {
                true => 3 * MS,
                false => 0,
            }
        });
        assert!(s.is_empty(), "{s:?}");
    }

    #[test]
    fn a_standing_queue_is_signalled_after_an_interval_then_faster() {
        let mut c = codel();
        let s = run(&mut c, 0, 200 * MS, 10 * US, |_| MS);
        // The first receive above target starts the clock; one interval on
        // (to the step), the first signal.
        assert_eq!(s[0], 5 * MS);
        assert!(c.signalling());
        // Then by the control law: gaps of interval / sqrt(count), shrinking.
        let gaps: Vec<u64> = s.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            (gaps[0] as i64 - 5 * MS as i64).abs() <= 10 * US as i64,
            "{gaps:?}"
        );
        assert!(
            (gaps[1] as i64 - (5.0 * MS as f64 / 2f64.sqrt()) as i64).abs() <= 10 * US as i64,
            "{gaps:?}"
        );
        assert!(gaps.windows(2).all(|w| w[1] <= w[0] + 10 * US), "{gaps:?}");
        // 200 ms: count grows as (t / interval)^2 / 4 or so: ~ 400, not
        // one per receive (20 000 receives).
        assert!(s.len() > 100 && s.len() < 2_000, "{}", s.len());
    }

    #[test]
    fn it_stops_once_the_sojourn_is_below_target() {
        let mut c = codel();
        let s = run(&mut c, 0, 50 * MS, 10 * US, |_| MS);
        assert!(!s.is_empty());
        assert!(!c.dequeue(50 * MS, 100 * US));
        assert!(!c.signalling());
        assert!(run(&mut c, 50 * MS, 100 * MS, 10 * US, |_| 100 * US).is_empty());
    }

    #[test]
    fn coming_back_soon_resumes_near_the_rate_it_had() {
        let mut c = codel();
        let first = run(&mut c, 0, 100 * MS, 10 * US, |_| MS);
        let count_then = c.count;
        assert!(count_then > 10);
        // Quiet for 2 ms, then a standing queue again.
        assert!(!c.dequeue(100 * MS, 0));
        let again = run(&mut c, 102 * MS, 20 * MS, 10 * US, |_| MS);
        // The first signal one interval after it came back; then gaps far
        // below a fresh start's 5 ms.
        assert_eq!(again[0], 107 * MS);
        assert!(
            again[1] - again[0] < 2 * MS,
            "{:?} after {}",
            &again[..2],
            first.len()
        );
        // After a long quiet (> 16 intervals) it starts from one.
        assert!(!c.dequeue(200 * MS, 0));
        let fresh = run(&mut c, 400 * MS, 20 * MS, 10 * US, |_| MS);
        assert_eq!(fresh[1] - fresh[0], 5 * MS);
    }

    #[test]
    fn settings_parse() {
        let p = |s: &str| s.parse::<Setting>().map(|s| s.0);
        assert_eq!(p("on"), Ok(Some(Params::DEFAULT)));
        assert_eq!(p("off"), Ok(None));
        assert_eq!(
            p("1/10"),
            Ok(Some(Params {
                target_ns: MS,
                interval_ns: 10 * MS
            }))
        );
        assert_eq!(p("0.25/2.5").unwrap().unwrap().target_ns, 250 * US);
        for bad in [
            "", "1", "5/1", "1/1", "0/5", "-1/5", "1/2000", "nan/5", "x/y", "yes",
        ] {
            let e = p(bad).unwrap_err();
            assert!(e.contains("TARGET_MS/INTERVAL_MS"), "{bad}: {e}");
        }
        assert_eq!(Params::DEFAULT.to_string(), "target 0.5 ms, interval 5 ms");
    }

    /// Property, over random sojourn sequences (runs above and below
    /// target, random receive gaps): no signal for a receive below target,
    /// none before the sojourn stood above target for a whole interval,
    /// and within a signalling spell the k-th signal comes no sooner than
    /// the control law's schedule allows (the sum of interval / sqrt(count)
    /// over the signals before it): the rate is CoDel's, whatever the
    /// receive rate.
    #[test]
    fn random_sequences_keep_the_rules() {
        let mut rng = crate::offload::testutil::XorShift(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.next();
        let mut signals = 0;
        for _ in 0..200 {
            let target_ns = 50 * US + next() % (2 * MS);
            let p = Params {
                target_ns,
                interval_ns: target_ns + 100 * US + next() % (20 * MS),
            };
            let mut c = Codel::new(p);
            let mut t = next() % (1 << 40);
            // Since when the sojourn stood above target (None: below).
            let mut above_since: Option<u64> = None;
            // The spell: when it began, and the schedule's sum since (ns).
            let mut spell: Option<(u64, f64)> = None;
            for _ in 0..5_000 {
                t += 1 + next() % (300 * US);
                let above = next() % 8 != 0;
                let sojourn = match above {
                    true => p.target_ns + next() % (3 * p.target_ns),
                    false => next() % p.target_ns,
                };
                above_since = match above {
                    true => above_since.or(Some(t)),
                    false => None,
                };
                let (was, count_before) = (c.signalling(), c.count);
                if c.dequeue(t, sojourn) {
                    signals += 1;
                    assert!(above, "signal below target");
                    let since = above_since.expect("above");
                    assert!(
                        t >= since + p.interval_ns,
                        "signal {} ns into a run above target, interval {}",
                        t - since,
                        p.interval_ns
                    );
                    match (was, spell.as_mut()) {
                        (true, Some((start, sum))) => {
                            *sum += p.interval_ns as f64 / f64::from(count_before.max(1)).sqrt();
                            assert!(
                                (t - *start) as f64 + 100.0 >= *sum,
                                "signal {} ns into the spell, the schedule allows {sum}",
                                t - *start
                            );
                        }
                        _ => spell = Some((t, 0.0)),
                    }
                }
                if !c.signalling() {
                    spell = None;
                }
            }
        }
        assert!(signals > 1_000, "the sequences signalled {signals} times");
    }

    #[test]
    fn signals_count() {
        let mut c = codel();
        let s = run(&mut c, 0, 60 * MS, 10 * US, |_| MS);
        assert_eq!(c.signals(), s.len() as u64);
    }
}
